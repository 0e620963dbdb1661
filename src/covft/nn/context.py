"""The per-forward context that the model wrapper hands to every context-aware module."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from covft.nn.segments import check_owner

__all__ = ["ContextState"]


@dataclass(eq=False)
class ContextState:
    """Shared, mutable holder set by the model wrapper before the vision tower runs, read by every
    context-aware module.

    One instance is shared by all CoMoE blocks (and QA-ViT layers) of a model: the wrapper encodes
    the instruction text once per forward with the frozen text encoder, stores the result here,
    runs the vision tower, then calls :meth:`clear`. Passing context this way keeps the vision
    tower's own ``forward`` signature untouched.

    Two layouts, told apart by ``owner``:

    - ``owner is None`` (LLaVA-1.5, one image per sample): row ``i`` of the tower input
      ``[B, N, d]`` is image ``i`` and has its own context row ``i``; ``text`` is
      ``[B_images, d_t]`` in ``pixel_values`` order.
    - ``owner`` set (several images or anyres tiles per sample, packed Qwen-VL towers): the
      context is per sample, ``S`` rows (one per sample that has images), and ``owner`` gives, for
      every row of the tower input ``[R, N, d]`` (or every token of packed ``[T, d]``), the index
      of its sample. All rows and tokens of a sample share one gate vector.

    Attributes:
        text: ``[B_images, d_t]`` (no owner) or ``[S, d_t]`` (owner) frozen text encoder [CLS]
            vectors.
        text_tokens: ``[B_images or S, T, d_t]`` token-level states (used by QA-ViT).
        text_mask: ``[B_images or S, T]`` bool/long, 1 = real token.
        owner: ``None``, or a long tensor ``[R]`` / ``[T]``: sample index (into ``text``) of every
            row / packed token the tower processes. Set per tower pass; treat it as read-only.
    """

    text: torch.Tensor | None = None
    text_tokens: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    owner: torch.Tensor | None = None

    def clear(self) -> None:
        """Drop all tensors, so a stale context can never leak into the next forward."""
        self.text = None
        self.text_tokens = None
        self.text_mask = None
        self.owner = None

    def rows(self, tensor: torch.Tensor, count: int, name: str = "context") -> torch.Tensor:
        """A per-sample (or, without owner, per-image) ``tensor`` as one entry per tower row.

        Returns ``tensor[owner]`` for the ``count`` rows (or packed tokens) of the tower input, or
        ``tensor`` itself when ``owner`` is ``None`` (it must then have ``count`` rows). Raises
        ``ValueError`` naming ``name`` when the sizes disagree.
        """
        owner = self.owner
        if owner is None:
            if tensor.shape[0] != count:
                raise ValueError(
                    f"ContextState.{name} has {tensor.shape[0]} rows but the vision tower got {count} "
                    "images: without ContextState.owner, give one row per image, in pixel_values order"
                )
            return tensor
        if owner.shape != (count,):
            raise ValueError(
                f"ContextState.owner has shape {tuple(owner.shape)} but the vision tower got {count} "
                "rows (or packed tokens): owner needs one sample index per row"
            )
        owner = owner.to(tensor.device)
        check_owner(owner, count, tensor.shape[0])
        return tensor[owner]
