"""Contextual Mixture-of-Experts (CoMoE): the MLP of a ViT block, replaced by context-routed experts."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from covft.nn.context import ContextState
from covft.nn.cve import ContextVectorExtractor
from covft.nn.experts import FusedExperts, FusedSwiGLUExperts
from covft.nn.routing import RoutedModule
from covft.nn.segments import check_owner, segment_mean

__all__ = ["ROUTINGS", "CONTEXTS", "ContextualMoE"]

ROUTINGS = ("dense", "sparse", "uniform")
"""Gate rules: softmax over all experts, renormalised top-k of the softmax, or a fixed 1/E."""

CONTEXTS = ("cve", "text", "image", "concat")
"""Router inputs: CVE(z, t), the text vector t, mean-pooled tokens of z, or Linear([mean z; t])."""

_DEFAULT_LOAD_BALANCE_WEIGHT = 0.01


_PLAIN_LAYOUTS = (
    ("fc1", "fc2", "activation_fn"),  # CLIPMLP, SiglipMLP
    ("fc1", "fc2", "act"),  # Qwen2-VL's VisionMlp
    ("linear_fc1", "linear_fc2", "act_fn"),  # Qwen3-VL's Qwen3VLVisionMLP
)
"""Attribute names (in, out, activation) of the ``fc -> act -> fc`` MLPs :func:`_upcycle` knows."""


def _upcycle(mlp: nn.Module, num_experts: int) -> FusedExperts | FusedSwiGLUExperts:
    """The fused experts for ``mlp``'s layout, each a copy of ``mlp`` (see :meth:`ContextualMoE.from_mlp`)."""
    for fc1, fc2, act in _PLAIN_LAYOUTS:
        if all(hasattr(mlp, name) for name in (fc1, fc2, act)):
            activation = copy.deepcopy(getattr(mlp, act))
            return FusedExperts.from_linear(getattr(mlp, fc1), getattr(mlp, fc2), activation, num_experts)
    if all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        act = copy.deepcopy(mlp.act_fn)
        return FusedSwiGLUExperts.from_linear(mlp.gate_proj, mlp.up_proj, mlp.down_proj, act, num_experts)
    raise ValueError(
        f"{type(mlp).__name__} lacks the attributes of an MLP that from_mlp can upcycle: two nn.Linear "
        "and an activation named .fc1/.fc2/.activation_fn (CLIPMLP, SiglipMLP), .fc1/.fc2/.act "
        "(Qwen2-VL) or .linear_fc1/.linear_fc2/.act_fn (Qwen3-VL), or .gate_proj, .up_proj, "
        ".down_proj (nn.Linear) and .act_fn like Qwen2.5-VL's gated vision MLP"
    )


class ContextualMoE(RoutedModule):
    """Drop-in replacement for a ViT block's MLP (same forward signature: hidden_states [B,N,d] -> [B,N,d]); input is LN2(h).

    ``y = sum_e g_e * FFN_e(z)`` with one gate vector ``g`` per sample, computed by a router from
    a context vector (method.md 2.3). The instruction's text vector is read from the shared
    :class:`ContextState`, which the model wrapper fills before the vision tower runs. Because
    upcycled experts start identical and gates sum to one, a freshly built CoMoE computes exactly
    the MLP it replaces.

    Without ``state.owner`` a sample is a row of ``[B, N, d]``. With it (several images or anyres
    tiles per sample: ``[R, N, d]``; packed Qwen-VL tokens: ``[T, d]``) a sample is every row or
    token that the owner gives it: the context pools over all of them (segment softmax in the CVE,
    segment mean for "image"/"concat"), the gates are per sample and every row gets its sample's.

    Args:
        experts: the E experts (see :meth:`FusedExperts.from_linear` for a CLIP/SigLIP MLP,
            :meth:`FusedSwiGLUExperts.from_linear` for a gated one).
        state: shared context holder; ``state.text`` must be ``[B, text_dim]`` (or ``[S, text_dim]``
            with ``state.owner``) when the context needs text.
        text_dim: width of the text vector; may be ``None`` only for ``context="image"`` or
            ``routing="uniform"``.
        routing: one of :data:`ROUTINGS`.
        top_k: experts kept per sample with ``routing="sparse"``.
        context: one of :data:`CONTEXTS`; ignored by ``routing="uniform"``, which builds no router
            and no context module (so every parameter receives a gradient).
        num_heads: attention heads of the CVE.
        load_balance_weight: weight of the Switch-style load-balancing loss, sparse routing only;
            ``None`` means 0.01 for sparse routing, 0 disables it.

    Attributes:
        router: ``nn.Linear(ctx_dim, E)`` or ``None`` (uniform).
        cve: the :class:`ContextVectorExtractor` or ``None`` (contexts other than "cve").
        concat_proj: ``nn.Linear(d + d_t, d_t)`` for ``context="concat"``, else ``None``.
        last_gates: ``[B, E]`` (``[S, E]`` with an owner: one row per sample) detached gates of the
            last forward (analysis, logging); float32 whatever the tower's dtype (routing runs in
            float32), the experts cast them.
        last_context: ``[B or S, ctx_dim]`` detached router input of the last forward (``None`` for
            uniform).
        aux_loss: load-balancing loss of the last forward, already weighted, with grad; ``None``
            unless sparse routing with a non-zero weight (see :class:`RoutedModule`).
    """

    def __init__(
        self,
        experts: FusedExperts | FusedSwiGLUExperts,
        state: ContextState,
        text_dim: int | None,
        *,
        routing: str = "dense",
        top_k: int = 2,
        context: str = "cve",
        num_heads: int = 4,
        load_balance_weight: float | None = None,
    ) -> None:
        super().__init__()
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
        num_experts = experts.num_experts
        if routing == "sparse" and not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, {num_experts}] for {num_experts} experts, got {top_k}")
        if load_balance_weight is None:
            load_balance_weight = _DEFAULT_LOAD_BALANCE_WEIGHT if routing == "sparse" else 0.0
        elif load_balance_weight < 0:
            raise ValueError(f"load_balance_weight must be >= 0, got {load_balance_weight}")
        elif load_balance_weight > 0 and routing != "sparse":
            raise ValueError(
                f"load_balance_weight={load_balance_weight} only applies to routing='sparse', got {routing!r}"
            )
        needs_text = routing != "uniform" and context != "image"
        if needs_text and text_dim is None:
            raise ValueError(f"context={context!r} reads the text vector: pass text_dim (768 for BERT-base)")

        self.experts = experts
        self.state = state
        self.text_dim = text_dim
        self.routing = routing
        self.context = context
        self.top_k = top_k
        self.load_balance_weight = float(load_balance_weight)
        self.num_experts = num_experts

        dim = experts.dim
        self.cve: ContextVectorExtractor | None = None
        self.concat_proj: nn.Linear | None = None
        self.router: nn.Linear | None = None
        self.ctx_dim: int | None = None
        if routing != "uniform":
            if context == "cve":
                self.cve = ContextVectorExtractor(dim, text_dim, num_heads=num_heads)
            elif context == "concat":
                self.concat_proj = nn.Linear(dim + text_dim, text_dim)
            self.ctx_dim = dim if context == "image" else text_dim
            self.router = nn.Linear(self.ctx_dim, num_experts)

        self.last_context: torch.Tensor | None = None

    @classmethod
    def from_mlp(
        cls,
        mlp: nn.Module,
        state: ContextState,
        text_dim: int | None,
        num_experts: int = 4,
        **kwargs,
    ) -> ContextualMoE:
        """Upcycle ``mlp`` into a CoMoE with ``num_experts`` copies of it.

        Two MLP layouts are recognised by their attributes: ``.fc1``, ``.fc2`` (``nn.Linear``) and
        ``.activation_fn`` (``CLIPMLP``/``SiglipMLP``) give :class:`FusedExperts`; ``.gate_proj``,
        ``.up_proj``, ``.down_proj`` and ``.act_fn`` (the gated SwiGLU MLP of Qwen2.5-VL's vision
        blocks, ``Qwen2_5_VLMLP``) give :class:`FusedSwiGLUExperts`. The activation module is
        deep-copied, never assumed. New modules (router, CVE) are put on the device and dtype of
        the experts. ``kwargs`` go to the constructor.
        """
        experts = _upcycle(mlp, num_experts)
        moe = cls(experts, state, text_dim, **kwargs)
        weight = next(experts.parameters())
        for module in (moe.cve, moe.concat_proj, moe.router):
            if module is not None:
                module.to(device=weight.device, dtype=weight.dtype)
        return moe

    def _text(self, hidden_states: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
        text = self.state.text
        batch = hidden_states.shape[0]
        if text is None:
            raise ValueError(
                f"ContextualMoE(context={self.context!r}) needs the instruction's text vector, but "
                f"ContextState.text is None. Set state.text to the frozen text encoder's [CLS] vectors, "
                f"shape [num_images, {self.text_dim}] ([num_samples, {self.text_dim}] with "
                "ContextState.owner), before running the vision tower (the model "
                "wrapper does this from the instruction text)."
            )
        if owner is not None:
            if text.dim() != 2 or text.shape[1] != self.text_dim:
                raise ValueError(
                    f"ContextState.text has shape {tuple(text.shape)}: with ContextState.owner, pass one "
                    f"[CLS] vector per sample that has images, shape [num_samples, {self.text_dim}]."
                )
        elif tuple(text.shape) != (batch, self.text_dim):
            raise ValueError(
                f"ContextState.text has shape {tuple(text.shape)} but the vision tower got {batch} images: "
                f"pass one [CLS] vector per image in pixel_values order, shape [{batch}, {self.text_dim}]."
            )
        return text.to(device=hidden_states.device, dtype=hidden_states.dtype)

    def _mean(self, hidden_states: torch.Tensor, owner: torch.Tensor | None, samples: int) -> torch.Tensor:
        if owner is None:
            return hidden_states.mean(dim=1)
        return segment_mean(hidden_states, owner, samples)

    def _context_vector(
        self, hidden_states: torch.Tensor, owner: torch.Tensor | None = None, samples: int = 0
    ) -> torch.Tensor:
        if self.context == "image":
            return self._mean(hidden_states, owner, samples)
        text = self._text(hidden_states, owner)
        if self.context == "text":
            return text
        if self.context == "concat":
            return self.concat_proj(torch.cat([self._mean(hidden_states, owner, samples), text], dim=-1))
        if owner is None:
            return self.cve(hidden_states, text)
        return self.cve(hidden_states, text, owner)

    def _samples(self, rows: torch.Tensor, owner: torch.Tensor) -> int:
        """How many samples ``owner`` maps ``rows [R, N, d]`` to (the rows of ``ContextState.text``,
        else ``max(owner) + 1``), after checking the owner; the CVE checks it itself."""
        if owner.shape != (rows.shape[0],):
            raise ValueError(
                f"ContextState.owner has shape {tuple(owner.shape)} but the MLP got {rows.shape[0]} rows "
                "(or packed tokens): owner needs one sample index per row"
            )
        if self.state.text is not None:
            samples = self.state.text.shape[0]
        else:  # context "image" or uniform routing may run without text
            samples = int(owner.max()) + 1 if owner.numel() else 0
        if self.cve is None:
            check_owner(owner, rows.shape[0], samples)
        return samples

    def _gates(self, hidden_states: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample gates ``[S, E]`` (``S = B`` without ``owner``), in float32."""
        batch = hidden_states.shape[0] if owner is None else self._samples(hidden_states, owner)
        self.aux_loss = None
        if self.routing == "uniform":
            self.last_context = None
            return torch.full(
                (batch, self.num_experts),
                1.0 / self.num_experts,
                device=hidden_states.device,
                dtype=torch.float32,
            )
        context = self._context_vector(hidden_states, owner, batch)
        self.last_context = context.detach()
        probs = self.router(context).float().softmax(dim=-1)
        if self.routing == "dense":
            return probs
        top = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(
            -1, top.indices, top.values / top.values.sum(-1, keepdim=True)
        )
        if self.load_balance_weight > 0:
            assigned = F.one_hot(top.indices, self.num_experts).sum(dim=(0, 1)).to(probs.dtype)
            fraction = assigned / (batch * self.top_k)
            self.aux_loss = self.load_balance_weight * self.num_experts * (fraction * probs.mean(0)).sum()
        return gates

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states = LN2(h)`` -> MLP output of the same shape.

        ``[B, N, d]`` without ``ContextState.owner``: one gate vector per row. With the owner:
        ``[R, N, d]`` (owner ``[R]``) or packed ``[T, d]`` (owner ``[T]``); gates are computed per
        sample (``last_gates [S, E]``) and every row or token is mixed with its sample's gates.
        """
        owner = self.state.owner
        dim = self.experts.dim
        if hidden_states.dim() not in (2, 3) or hidden_states.shape[-1] != dim:
            raise ValueError(
                f"hidden_states must be [B, N, {dim}] (or packed [T, {dim}] with ContextState.owner), "
                f"got {tuple(hidden_states.shape)}"
            )
        if owner is None:
            if hidden_states.dim() == 2:
                raise ValueError(
                    f"packed hidden_states [T, {dim}] (a Qwen-VL style tower) need ContextState.owner, "
                    "the sample index of every token; it is None"
                )
            gates = self._gates(hidden_states)
            self.last_gates = gates.detach()
            return self.experts(hidden_states, gates)
        rows = hidden_states.unsqueeze(1) if hidden_states.dim() == 2 else hidden_states
        owner = owner.to(rows.device)
        gates = self._gates(rows, owner)
        self.last_gates = gates.detach()
        out = self.experts(rows, gates[owner])  # indexing sums the rows' gate gradients per sample
        return out.view_as(hidden_states)

    def extra_repr(self) -> str:
        top_k = f", top_k={self.top_k}" if self.routing == "sparse" else ""
        return f"routing={self.routing!r}{top_k}, context={self.context!r}, num_experts={self.num_experts}"
