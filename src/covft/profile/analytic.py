"""FLOPs of LLaVA's training step and prefill, written out matrix product by matrix product.

The model writes out every matrix product of LLaVA's forward and of the backward that each
strategy needs (which inputs need a gradient, which weights train), in the counting convention
of :mod:`covft.profile.flops`. It reproduces the counter on real models (the tests check it at a
tiny geometry) and therefore extrapolates the count to geometries that do not fit in memory,
like the full LLaVA-1.5-7B training step.
"""

from __future__ import annotations

from covft.profile.flops import _attention_backward, _attention_forward
from covft.profile.geometry import FlopGeometry

__all__ = ["ANALYTIC_METHODS", "analytic_flops"]

ANALYTIC_METHODS = ("freeze", "full", "covft")
"""Strategies the analytic model covers (CoVFT with dense routing and CVE context)."""


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
    train = not inference
    vision_trains = train and method != "freeze"
    vision = _vision(geometry, method, vision_trains)
    llm = _llm(geometry, train, vision_trains)
    forward = vision.forward + llm.forward
    backward = vision.backward + llm.backward
    return {
        "forward": forward,
        "backward": backward,
        "total": forward + backward,
        "vision": vision.forward + vision.backward,
        "llm": llm.forward + llm.backward,
    }


def _vision(g: FlopGeometry, method: str, vision_trains: bool) -> _Ledger:
    """The vision tower (patch embedding, blocks; CoVFT's CoMoE blocks and frozen text encoder)."""
    batch, d, h, n = g.batch, g.vision_width, g.vision_mlp, g.vision_tokens
    covft = method == "covft"
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
            _comoe_block(vision, g, on_path)
        else:
            vision.linear(rows, d, h, grad_input=on_path, grad_weight=train_weights)
            vision.linear(rows, h, d, grad_input=on_path, grad_weight=train_weights)
    if covft:
        _text_encoder(vision, g)
    return vision


def _comoe_block(vision: _Ledger, g: FlopGeometry, on_path: bool) -> None:
    """A CoMoE block's MLP: CVE, router and the fused experts, all trained."""
    batch, d, h, t = g.batch, g.vision_width, g.vision_mlp, g.text_width
    rows, n, experts = batch * g.vision_tokens, g.vision_tokens, g.num_experts
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


def _text_encoder(vision: _Ledger, g: FlopGeometry) -> None:
    """The frozen text encoder, once per forward, no gradient."""
    t, rows_t = g.text_width, g.batch * g.context_tokens
    for _ in range(g.text_layers):
        for _ in range(4):
            vision.linear(rows_t, t, t, grad_input=False, grad_weight=False)
        vision.attention(g.batch, g.context_tokens, g.context_tokens, t, backward=False)
        vision.linear(rows_t, t, g.text_mlp, grad_input=False, grad_weight=False)
        vision.linear(rows_t, g.text_mlp, t, grad_input=False, grad_weight=False)
    if g.text_pooler:
        vision.linear(g.batch, t, t, grad_input=False, grad_weight=False)


def _llm(g: FlopGeometry, train: bool, vision_trains: bool) -> _Ledger:
    """The projector, the Llama LLM and the LM head (last position only at a prefill)."""
    llm = _Ledger()
    batch, d = g.batch, g.vision_width
    tokens = g.llm_tokens if train else g.prompt_tokens
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
    llm.linear(rows if train else batch, width, g.vocab, grad_input=needs_grad, grad_weight=llm_trains)
    return llm
