"""Context Vector Extraction (CVE): one context vector per sample from visual tokens and text."""

from __future__ import annotations

import torch
from torch import nn

from covft.nn.layers import PostNormResidualBlock, QuickGELU

__all__ = ["ContextVectorExtractor"]


class ContextVectorExtractor(nn.Module):
    """Pools a block's visual tokens and the instruction's text vector into a context vector ``c``.

    method.md 2.2: ``z^ = RB_v(z)``, ``t^ = RB_t(t)``, ``KV = [z^ ; t^ repeated over tokens]``,
    ``c = MHA(query=t^ as one token, key=KV, value=KV)``. The single text query does the pooling,
    so ``c`` lives in the text space (``text_dim``) and says which visual content the
    instruction asks about; the CoMoE router reads it.

    Args:
        visual_dim: width ``d`` of the visual tokens.
        text_dim: width ``d_t`` of the text vector (and of the output).
        num_heads: attention heads; must divide ``text_dim``.
        act_layer: activation of both residual blocks.
    """

    def __init__(
        self,
        visual_dim: int,
        text_dim: int,
        num_heads: int = 4,
        act_layer: type[nn.Module] = QuickGELU,
    ) -> None:
        super().__init__()
        if text_dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide text_dim={text_dim}")
        self.visual_dim = visual_dim
        self.text_dim = text_dim
        self.visual_block = PostNormResidualBlock(visual_dim, act_layer=act_layer)
        self.text_block = PostNormResidualBlock(text_dim, act_layer=act_layer)
        self.attn = nn.MultiheadAttention(
            embed_dim=text_dim,
            num_heads=num_heads,
            kdim=visual_dim + text_dim,
            vdim=visual_dim + text_dim,
            batch_first=True,
        )

    def forward(self, visual_tokens: torch.Tensor, text_vector: torch.Tensor) -> torch.Tensor:
        """Map ``visual_tokens [B, N, d]`` and ``text_vector [B, d_t]`` to ``c [B, d_t]``."""
        if visual_tokens.dim() != 3 or visual_tokens.shape[-1] != self.visual_dim:
            raise ValueError(
                f"visual_tokens must be [B, N, {self.visual_dim}], got {tuple(visual_tokens.shape)}"
            )
        batch, num_tokens, _ = visual_tokens.shape
        if text_vector.shape != (batch, self.text_dim):
            raise ValueError(
                f"text_vector must be [{batch}, {self.text_dim}] (one row per image), "
                f"got {tuple(text_vector.shape)}"
            )
        visual = self.visual_block(visual_tokens)
        text = self.text_block(text_vector)
        key_value = torch.cat([visual, text.unsqueeze(1).expand(batch, num_tokens, self.text_dim)], dim=-1)
        context, _ = self.attn(text.unsqueeze(1), key_value, key_value, need_weights=False)
        return context.squeeze(1)
