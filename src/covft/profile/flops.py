"""FLOPs of a training step and of a prefill: counted with ``FlopCounterMode``, and analytic.

Counting convention (``torch.utils.flop_counter``): a matrix product ``[M, K] @ [K, N]`` is
``2*M*K*N`` FLOPs; convolutions likewise; attention is two batched products forward and five
backward, over the full ``S_q x S_k`` square (a causal mask is not discounted); element-wise
work (activations, norms, softmax, the optimizer update) is not counted. PyTorch's registry
misses the CPU flash-attention kernels, so :data:`CPU_ATTENTION_FORMULAS` adds them with the
same convention as the CUDA kernels.

The analytic model (:func:`analytic_flops`) writes out every matrix product of LLaVA's
forward and of the backward that each strategy needs (which inputs need a gradient, which
weights train) in the same convention. It reproduces the counter on real models (the tests
check it at a tiny geometry) and therefore extrapolates the count to geometries that do not fit
in memory, like the full LLaVA-1.5-7B training step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "CPU_ATTENTION_FORMULAS",
    "ANALYTIC_METHODS",
    "FlopGeometry",
    "GlobalFlopCounterMode",
    "LLAVA_15_7B_GEOMETRY",
    "analytic_flops",
    "count_flops",
    "geometry_of",
]

aten = torch.ops.aten


def _attention_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """``q @ k^T`` and ``scores @ v`` over ``[B, H, S, D]`` tensors."""
    batch, heads, s_q, d_q = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return 2 * batch * heads * s_q * s_k * d_q + 2 * batch * heads * s_q * s_k * d_v


def _attention_backward(
    grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    """Recompute the scores, then grad of scores, v, q and k: five batched products."""
    batch, heads, s_q, d_q = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    scores = 2 * batch * heads * s_q * s_k
    return scores * d_q + scores * d_v + scores * d_v + scores * d_q + scores * d_q


CPU_ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _attention_forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
}
"""FLOP formulas for the CPU attention kernels, which ``torch.utils.flop_counter`` does not register."""


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP goes to "Global"."""

    parents = ("Global",)

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: Any) -> None:
        return None


class GlobalFlopCounterMode(FlopCounterMode):
    """``FlopCounterMode`` without its per-module breakdown.

    The module tracker hooks the inputs of every module for backward; a custom autograd function
    that calls ``torch.autograd.grad`` inside its backward (the fused experts differentiate their
    activation module that way) then fails with "A leaf node was passed to
    _will_engine_execute_node". Counting is unchanged: the same dispatch mode and formulas.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mod_tracker = _GlobalOnly()


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run ``fn()`` under ``FlopCounterMode`` and return (total FLOPs, FLOPs by aten op name)."""
    counter = GlobalFlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FORMULAS)
    with counter:
        fn()
    by_op = {str(op): int(v) for op, v in counter.get_flop_counts()["Global"].items()}
    return int(counter.get_total_flops()), by_op


# ---------------------------------------------------------------------------------------- analytic
@dataclass(frozen=True)
class FlopGeometry:
    """Everything the FLOP count of LLaVA (+ a strategy) depends on. Per-sample token counts.

    ``llm_tokens`` is the whole training sequence (image tokens included); ``prompt_tokens`` the
    prefill of the inference measurement. ``comoe_blocks`` and ``num_experts`` describe CoVFT.
    """

    vision_layers: int
    feeding_layers: int
    vision_width: int
    vision_mlp: int
    image_size: int
    patch_size: int
    channels: int
    cls_token: bool
    image_tokens: int
    llm_layers: int
    llm_width: int
    llm_mlp: int
    llm_heads: int
    llm_kv_heads: int
    vocab: int
    text_layers: int
    text_width: int
    text_mlp: int
    text_pooler: bool
    llm_tokens: int
    prompt_tokens: int
    context_tokens: int
    comoe_blocks: int = 0
    num_experts: int = 4
    cve_heads: int = 4
    batch: int = 1
    train_llm: bool = True
    train_projector: bool = True
    notes: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def vision_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + (1 if self.cls_token else 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "vision_tokens": self.vision_tokens}


LLAVA_15_7B_GEOMETRY = FlopGeometry(
    vision_layers=24,
    feeding_layers=23,
    vision_width=1024,
    vision_mlp=4096,
    image_size=336,
    patch_size=14,
    channels=3,
    cls_token=True,
    image_tokens=576,
    llm_layers=32,
    llm_width=4096,
    llm_mlp=11008,
    llm_heads=32,
    llm_kv_heads=32,
    vocab=32064,
    text_layers=12,
    text_width=768,
    text_mlp=3072,
    text_pooler=False,
    llm_tokens=576 + 60,
    prompt_tokens=576 + 45,
    context_tokens=24,
    comoe_blocks=12,
    num_experts=4,
    notes={"source": "LLaVA-1.5-7B: CLIP ViT-L/14-336, Vicuna-7B, bert-base-uncased; 576 + ~60 tokens"},
)
"""LLaVA-1.5-7B with 576 image tokens and about 60 text tokens per sample (a typical 665K turn)."""


class _Ledger:
    """Adds the FLOPs of matrix products, forward and the backward the trainability implies."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def linear(self, rows: int, fan_in: int, fan_out: int, *, grad_input: bool, grad_weight: bool) -> None:
        flops = 2 * rows * fan_in * fan_out
        self.forward += flops
        self.backward += flops * (int(grad_input) + int(grad_weight))

    def attention(self, batch_heads: int, s_q: int, s_k: int, head_dim: int, *, backward: bool) -> None:
        shape_q, shape_k = (batch_heads, 1, s_q, head_dim), (batch_heads, 1, s_k, head_dim)
        self.forward += _attention_forward(shape_q, shape_k, shape_k)
        if backward:
            self.backward += _attention_backward(shape_q, shape_q, shape_k, shape_k)


ANALYTIC_METHODS = ("freeze", "full", "covft")
"""Strategies the analytic model covers (CoVFT with dense routing and CVE context)."""


def analytic_flops(geometry: FlopGeometry, method: str, *, inference: bool = False) -> dict[str, int]:
    """FLOPs of one training step (forward + backward) or of one prefill (``inference=True``,
    logits of the last position only), in the counter's convention.

    Models a CLIP-tower LLaVA (patch convolution, class token) with a Llama LLM; CoVFT with its
    defaults (dense routing, CVE context, LayerNorms of all blocks trained, so the backward reaches
    block 0). Returns ``{"forward", "backward", "total", "vision", "llm"}`` (vision = tower + CVE/experts
    + text encoder, forward and backward; llm = projector + LLM + lm_head).
    """
    if method not in ANALYTIC_METHODS:
        raise ValueError(f"the analytic model covers {ANALYTIC_METHODS}, not {method!r}")
    g = geometry
    train = not inference
    batch = g.batch
    d, h, n = g.vision_width, g.vision_mlp, g.vision_tokens
    covft = method == "covft"
    vision_trains = train and method != "freeze"

    vision = _Ledger()
    patches = (g.image_size // g.patch_size) ** 2
    # patch embedding: a convolution; only full fine-tuning trains it (pixels need no gradient)
    vision.linear(
        batch * patches,
        g.channels * g.patch_size**2,
        d,
        grad_input=False,
        grad_weight=vision_trains and method == "full",
    )
    comoe = set(range(g.feeding_layers - g.comoe_blocks, g.feeding_layers)) if covft else set()
    for block in range(g.vision_layers):
        on_path = vision_trains and block < g.feeding_layers
        train_weights = on_path and method == "full"
        rows = batch * n
        for _ in range(4):  # q, k, v, out
            vision.linear(rows, d, d, grad_input=on_path, grad_weight=train_weights)
        vision.attention(batch * 1, n, n, d, backward=on_path)  # heads fold into the width
        if block in comoe:
            experts = g.num_experts
            t = g.text_width
            # CVE: RB_v on the tokens, RB_t on the text vector, single-query attention, router
            vision.linear(rows, d, 2 * d, grad_input=on_path, grad_weight=on_path)
            vision.linear(rows, 2 * d, d, grad_input=on_path, grad_weight=on_path)
            vision.linear(batch, t, 2 * t, grad_input=False, grad_weight=on_path)
            vision.linear(batch, 2 * t, t, grad_input=on_path, grad_weight=on_path)
            # single-query attention without materialised keys/values (ContextVectorExtractor._attend):
            # query, query into the visual space per head, scores and pooling over the tokens (heads
            # as rows), visual and text halves of the values, output projection
            heads = g.cve_heads
            vision.linear(batch, t, t, grad_input=on_path, grad_weight=on_path)
            vision.linear(batch, t, d, grad_input=on_path, grad_weight=on_path)
            vision.linear(batch * heads, d, n, grad_input=on_path, grad_weight=on_path)
            vision.linear(batch * heads, n, d, grad_input=on_path, grad_weight=on_path)
            vision.linear(batch, d, t, grad_input=on_path, grad_weight=on_path)
            vision.linear(batch, t, t, grad_input=on_path, grad_weight=on_path)
            vision.linear(batch, t, t, grad_input=on_path, grad_weight=on_path)
            vision.linear(batch, t, experts, grad_input=on_path, grad_weight=on_path)  # router
            # fused experts: fc1 and fc2 of all experts as two GEMMs, plus gates @ fc2_bias
            vision.linear(rows, d, experts * h, grad_input=on_path, grad_weight=on_path)
            vision.linear(rows, experts * h, d, grad_input=on_path, grad_weight=on_path)
            vision.linear(batch, experts, d, grad_input=on_path, grad_weight=on_path)
        else:
            vision.linear(rows, d, h, grad_input=on_path, grad_weight=train_weights)
            vision.linear(rows, h, d, grad_input=on_path, grad_weight=train_weights)
    if covft:  # frozen text encoder, once per forward, no gradient
        t, rows_t = g.text_width, batch * g.context_tokens
        for _ in range(g.text_layers):
            for _ in range(4):
                vision.linear(rows_t, t, t, grad_input=False, grad_weight=False)
            vision.attention(batch, g.context_tokens, g.context_tokens, t, backward=False)
            vision.linear(rows_t, t, g.text_mlp, grad_input=False, grad_weight=False)
            vision.linear(rows_t, g.text_mlp, t, grad_input=False, grad_weight=False)
        if g.text_pooler:
            vision.linear(batch, t, t, grad_input=False, grad_weight=False)

    llm = _Ledger()
    tokens = g.prompt_tokens if inference else g.llm_tokens
    image_rows = batch * g.image_tokens
    projector_trains = train and g.train_projector
    llm_trains = train and g.train_llm
    llm.linear(image_rows, d, g.llm_width, grad_input=vision_trains, grad_weight=projector_trains)
    llm.linear(
        image_rows,
        g.llm_width,
        g.llm_width,
        grad_input=projector_trains or vision_trains,
        grad_weight=projector_trains,
    )
    # Anything upstream trains -> the LLM's hidden states need a gradient.
    needs_grad = train and (vision_trains or g.train_projector or g.train_llm)
    rows = batch * tokens
    width, kv_width = g.llm_width, g.llm_width // g.llm_heads * g.llm_kv_heads
    for _ in range(g.llm_layers):
        for fan_out in (width, kv_width, kv_width):  # q, k, v
            llm.linear(rows, width, fan_out, grad_input=needs_grad, grad_weight=llm_trains)
        llm.attention(batch * g.llm_heads, tokens, tokens, width // g.llm_heads, backward=needs_grad)
        llm.linear(rows, width, width, grad_input=needs_grad, grad_weight=llm_trains)  # out
        llm.linear(rows, width, g.llm_mlp, grad_input=needs_grad, grad_weight=llm_trains)  # gate
        llm.linear(rows, width, g.llm_mlp, grad_input=needs_grad, grad_weight=llm_trains)  # up
        llm.linear(rows, g.llm_mlp, width, grad_input=needs_grad, grad_weight=llm_trains)  # down
    llm.linear(batch if inference else rows, width, g.vocab, grad_input=needs_grad, grad_weight=llm_trains)

    forward = vision.forward + llm.forward
    backward = vision.backward + llm.backward
    return {
        "forward": forward,
        "backward": backward,
        "total": forward + backward,
        "vision": vision.forward + vision.backward,
        "llm": llm.forward + llm.backward,
    }


def geometry_of(
    model, *, llm_tokens: int, prompt_tokens: int, context_tokens: int, batch: int
) -> FlopGeometry:
    """The :class:`FlopGeometry` of a built :class:`~covft.models.CovftModel` (strategy applied)."""
    from covft.models.towers import has_cls_token

    config = model.config
    vision, text = config.vision_config, config.text_config
    strategy = model.strategy
    encoder = model.text_encoder
    num_experts, cve_heads = 4, 4
    if model.routed_blocks:
        moe = model.encoder_layers[model.routed_blocks[0]].mlp
        num_experts = moe.num_experts
        cve_heads = moe.cve.attn.num_heads if moe.cve is not None else cve_heads
    encoder_config = encoder.model.config if encoder is not None else None
    return FlopGeometry(
        vision_layers=vision.num_hidden_layers,
        feeding_layers=model.feeding_layers,
        vision_width=vision.hidden_size,
        vision_mlp=vision.intermediate_size,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        channels=vision.num_channels,
        cls_token=has_cls_token(model.vision_tower),
        image_tokens=model.num_image_tokens,
        llm_layers=text.num_hidden_layers,
        llm_width=text.hidden_size,
        llm_mlp=text.intermediate_size,
        llm_heads=text.num_attention_heads,
        llm_kv_heads=text.num_key_value_heads,
        vocab=text.vocab_size,
        text_layers=encoder_config.num_hidden_layers if encoder_config else 0,
        text_width=encoder_config.hidden_size if encoder_config else 0,
        text_mlp=encoder_config.intermediate_size if encoder_config else 0,
        text_pooler=bool(encoder is not None and getattr(encoder.model, "pooler", None) is not None),
        llm_tokens=llm_tokens,
        prompt_tokens=prompt_tokens,
        context_tokens=context_tokens,
        comoe_blocks=len(model.routed_blocks),
        num_experts=num_experts,
        cve_heads=cve_heads,
        batch=batch,
        train_llm=strategy.options.train_llm if strategy else True,
        train_projector=strategy.options.train_projector if strategy else True,
    )


def with_llm_layers(geometry: FlopGeometry, llm_layers: int) -> FlopGeometry:
    """The same geometry with another LLM depth (the reduced-LLM counts extrapolate this way)."""
    return replace(geometry, llm_layers=llm_layers)
