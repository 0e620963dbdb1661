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

    Rows of one sample (tiles, packed tokens) share its gates through ``state.owner``."""

    def __init__(self, projector: nn.Module, state: ContextState, text_dim: int, num_experts: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(copy.deepcopy(projector) for _ in range(num_experts))
        reference = next(projector.parameters())
        self.router = nn.Linear(text_dim, num_experts).to(device=reference.device, dtype=reference.dtype)
        self.state = state

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        text, owner = self.state.text, self.state.owner
        rows = image_features.shape[0]
        if text is None or (owner is None and text.shape[0] != rows):
            raise ValueError(
                "Q-MoE needs one instruction vector per image: pass context_input_ids (m.collate)"
            )
        gates = torch.softmax(self.router(text.to(self.router.weight.dtype)), dim=-1)
        self.last_gates = gates.detach()
        outputs = [expert(image_features) for expert in self.experts]
        row_gates = gates if owner is None else gates[_output_owner(owner, outputs[0].shape[0])]
        shape = (-1,) + (1,) * (outputs[0].dim() - 1)
        return sum(row_gates[:, e].reshape(shape).to(out.dtype) * out for e, out in enumerate(outputs))


def _output_owner(owner: torch.Tensor, rows: int) -> torch.Tensor:
    """The sample of each projector output row: the input's owner, or, where the projector merges
    k consecutive rows into one (Qwen's 2x2 merger over packed tokens, one image's tokens
    contiguous and a multiple of k), every k-th."""
    if owner.shape[0] == rows:
        return owner
    step = owner.shape[0] // rows
    if step * rows != owner.shape[0]:
        raise ValueError(f"Q-MoE: {owner.shape[0]} input rows do not merge into {rows} output rows")
    return owner[::step]


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
