"""The per-forward context that the model wrapper hands to every context-aware module."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ContextState"]


@dataclass(eq=False)
class ContextState:
    """Shared, mutable holder set by the model wrapper before the vision tower runs, read by every
    context-aware module.

    One instance is shared by all CoMoE blocks (and QA-ViT layers) of a model: the wrapper encodes
    the instruction text once per forward with the frozen text encoder, stores the result here,
    runs the vision tower, then calls :meth:`clear`. Passing context this way keeps the vision
    tower's own ``forward`` signature untouched.

    Attributes:
        text: ``[B_images, d_t]`` frozen text encoder [CLS] vectors, one row per image, in
            ``pixel_values`` order.
        text_tokens: ``[B_images, T, d_t]`` token-level states (used by QA-ViT).
        text_mask: ``[B_images, T]`` bool/long, 1 = real token.
    """

    text: torch.Tensor | None = None
    text_tokens: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None

    def clear(self) -> None:
        """Drop all tensors, so a stale context can never leak into the next forward."""
        self.text = None
        self.text_tokens = None
        self.text_mask = None
