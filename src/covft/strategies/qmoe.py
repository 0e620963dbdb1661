"""Q-MoE (Wang et al., ACM MM 2024): a text-routed mixture of experts in the connector.

(ours) The experts are E copies of the projector (upcycled, so the model is unchanged at
initialisation), mixed per sample by ``softmax(W t + b)`` where ``t`` is the instruction's
pooled ([CLS]) vector from the frozen text encoder. The vision tower stays frozen.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from covft.nn.context import ContextState
from covft.nn.routing import RoutedModule
from covft.strategies.base import Strategy, StrategyOptions, register_strategy


class ProjectorMoE(RoutedModule):
    """E projector experts mixed per sample by a router on the instruction vector (no auxiliary loss).

    Input ``[B, N, d]`` (one image per row, ``ContextState.text [B, d_t]``) or, with
    ``ContextState.owner``, ``[R, N, d]`` rows or packed ``[T, d]`` tokens with ``text [S, d_t]``:
    the gates are per sample (``last_gates [S, E]``) and each output row gets its sample's. A
    projector that merges ``k`` consecutive input rows into one output row (Qwen-VL's patch merger
    maps ``[T, d]`` to ``[T / 4, d']``) is supported when each group of ``k`` belongs to one sample.
    """

    def __init__(self, projector: nn.Module, state: ContextState, text_dim: int, num_experts: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(copy.deepcopy(projector) for _ in range(num_experts))
        reference = next(projector.parameters())
        self.router = nn.Linear(text_dim, num_experts).to(device=reference.device, dtype=reference.dtype)
        self.state = state

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        text, owner = self.state.text, self.state.owner
        if owner is None and image_features.dim() == 2:
            raise ValueError(
                "Q-MoE on packed [T, d] features needs ContextState.owner, the sample of every token"
            )
        if text is None or (owner is None and text.shape[0] != image_features.shape[0]):
            raise ValueError(
                "Q-MoE needs one instruction vector per image: pass context_input_ids (m.collate)"
            )
        gates = torch.softmax(self.router(text.to(self.router.weight.dtype)), dim=-1)
        self.last_gates = gates.detach()
        first = self.experts[0](image_features)  # its shape says how gates reach the output rows
        rows = self._row_gates(gates, image_features.shape[0], first.shape[0])
        rows = rows.view(*rows.shape, *[1] * (first.dim() - 1)).to(image_features.dtype)
        return sum(
            rows[:, e] * (first if e == 0 else expert(image_features))
            for e, expert in enumerate(self.experts)
        )

    def _row_gates(self, gates: torch.Tensor, rows_in: int, rows_out: int) -> torch.Tensor:
        """``gates [S, E]`` as one row per output row of the experts."""
        rows = self.state.rows(gates, rows_in, name="text")
        if rows_out == rows_in:
            return rows
        if self.state.owner is None or rows_out == 0 or rows_in % rows_out:
            raise ValueError(
                f"the projector maps {rows_in} rows to {rows_out}: Q-MoE handles a projector that "
                "keeps the rows, or, with ContextState.owner, merges k consecutive rows into one"
            )
        owner = self.state.owner.to(gates.device).view(rows_out, -1)
        if not bool((owner == owner[:, :1]).all()):
            raise ValueError(
                f"the projector merges groups of {owner.shape[1]} consecutive rows, but some group "
                "holds rows of two samples (ContextState.owner)"
            )
        return gates[owner[:, 0]]


@dataclass
class QmoeOptions(StrategyOptions):
    num_experts: int = 4
    """Projector experts."""


@register_strategy
class Qmoe(Strategy):
    name = "qmoe"
    Options = QmoeOptions
    needs_text = True
    changes_structure = True
    adds_beyond_stock = "a mixture of projector experts routed on the instruction by a separate text encoder"

    def apply(self, model) -> None:
        text_dim = model.ensure_text_encoder().hidden_size
        parent, attribute = model.family.projector[0].rsplit(".", 1)
        owner = model.llava.get_submodule(parent)
        projector = getattr(owner, attribute)
        setattr(owner, attribute, ProjectorMoE(projector, model.context, text_dim, self.options.num_experts))

    def vision_trainable(self, model):
        # the experts are the projector (trained with train_projector); the router is Q-MoE's own
        router = f"llava.{model.family.projector[0]}.router."
        return [n for n, _ in model.named_parameters() if n.startswith(router)]
