"""QA-ViT (Ganz et al., CVPR 2024): the instruction joins the frozen attention of late vision blocks.

In each chosen block, the instruction's token states (from the same frozen text encoder as
CoVFT, token level: ours) are projected per block (LayerNorm, Linear, GELU, Linear) and appended
as extra keys/values of the frozen self-attention (through its own k/v projections). The output
is ``out_proj(a) + tanh(gate) * instr_out_proj(a)``, with ``gate`` a scalar starting at 0 and
``instr_out_proj`` initialised from ``out_proj``. Only the projections, the gate and
``instr_out_proj`` train on the vision side.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from covft.models.towers import resolve_layers
from covft.nn.context import ContextState
from covft.strategies.base import Strategy, StrategyOptions, register_strategy


class QuestionAwareAttention(nn.Module):
    """Wraps a CLIP/SigLIP attention module (kept frozen as ``attn``); same call signature and return.

    Reads ``ContextState.text_tokens``/``text_mask`` per image row, or per sample gathered to the
    rows by ``ContextState.owner`` (several images or anyres tiles per sample). Packed ``[T, d]``
    (Qwen-VL) towers are not supported."""

    def __init__(self, attn: nn.Module, state: ContextState, text_dim: int) -> None:
        super().__init__()
        dim = attn.q_proj.in_features
        self.attn = attn
        self.state = state
        self.num_heads = attn.num_heads
        self.head_dim = dim // attn.num_heads
        reference = attn.q_proj.weight
        self.instruction_proj = nn.Sequential(
            nn.LayerNorm(text_dim), nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim)
        ).to(device=reference.device, dtype=reference.dtype)
        self.instr_out_proj = copy.deepcopy(attn.out_proj)
        self.gate = nn.Parameter(torch.zeros((), device=reference.device, dtype=reference.dtype))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """``hidden_states [B, N, d]`` (or ``[R, N, d]`` rows with ``ContextState.owner``: each row
        attends to its sample's instruction) -> ``(out, None)`` like the wrapped attention."""
        if hidden_states.dim() != 3:
            raise NotImplementedError(
                f"QA-ViT on packed (Qwen-VL style) towers is not implemented: the attention got "
                f"{tuple(hidden_states.shape)}, QA-ViT needs [rows, tokens, d]"
            )
        tokens, mask = self.state.text_tokens, self.state.text_mask
        if tokens is None:
            raise ValueError(
                "QA-ViT needs the instruction's token states: pass context_input_ids (m.collate builds them)"
            )
        if self.state.owner is None and tokens.shape[0] != hidden_states.shape[0]:
            raise ValueError(f"{tokens.shape[0]} instructions for {hidden_states.shape[0]} images")
        batch, length, dim = hidden_states.shape
        tokens = self.state.rows(tokens, batch, name="text_tokens")
        mask = None if mask is None else self.state.rows(mask, batch, name="text_mask")
        instruction = self.instruction_proj(tokens.to(hidden_states.dtype))
        keys_in = torch.cat([hidden_states, instruction], dim=1)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(self.attn.q_proj(hidden_states))
        k = heads(self.attn.k_proj(keys_in))
        v = heads(self.attn.v_proj(keys_in))
        if mask is None:  # every instruction token is real
            visible = None
        else:
            visible = torch.cat(
                [torch.ones(batch, length, dtype=torch.bool, device=mask.device), mask.bool()], 1
            )
            visible = visible[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=self.attn.scale)
        a = a.transpose(1, 2).reshape(batch, length, dim)
        out = self.attn.out_proj(a) + torch.tanh(self.gate) * self.instr_out_proj(a)
        return out, None


@dataclass
class QaVitOptions(StrategyOptions):
    layers: list[int] | None = None
    """Blocks made question-aware; default the second half of the feeding blocks."""


@register_strategy
class QaVit(Strategy):
    name = "qavit"
    Options = QaVitOptions
    needs_text = True
    needs_text_tokens = True
    changes_structure = True
    adds_beyond_stock = "instruction-aware attention in vision blocks, fed by a separate text encoder"

    def apply(self, model) -> None:
        if model.family.packed:
            raise NotImplementedError(
                f"QA-ViT on {model.family.display}'s packed tower is not implemented: its blocks attend within "
                "windows and images of packed tokens, so prompts / instruction tokens would have to join every "
                "attention segment. Use lora, dora, bitfit, selective, full or covft"
            )
        text_dim = model.ensure_text_encoder().hidden_size
        self.layers = resolve_layers(model.feeding_layers, layers=self.options.layers)
        for index in self.layers:
            block = model.encoder_layers[index]
            block.self_attn = QuestionAwareAttention(block.self_attn, model.context, text_dim)

    def vision_trainable(self, model):
        keys = (".instruction_proj.", ".instr_out_proj.", ".self_attn.gate")
        return [
            n
            for n, _ in model.named_parameters()
            if n.startswith(model.vision_prefix) and any(k in n for k in keys)
        ]
