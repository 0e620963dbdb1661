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
    """E projector experts mixed per image by a router on the instruction vector (no auxiliary loss)."""

    def __init__(self, projector: nn.Module, state: ContextState, text_dim: int, num_experts: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(copy.deepcopy(projector) for _ in range(num_experts))
        reference = next(projector.parameters())
        self.router = nn.Linear(text_dim, num_experts).to(device=reference.device, dtype=reference.dtype)
        self.state = state

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        text = self.state.text
        if text is None or text.shape[0] != image_features.shape[0]:
            raise ValueError(
                "Q-MoE needs one instruction vector per image: pass context_input_ids (m.collate)"
            )
        gates = torch.softmax(self.router(text.to(self.router.weight.dtype)), dim=-1)
        self.last_gates = gates.detach()
        out = sum(
            gates[:, e, None, None].to(image_features.dtype) * expert(image_features)
            for e, expert in enumerate(self.experts)
        )
        return out


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
