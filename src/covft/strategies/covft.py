"""CoVFT: context-aware visual fine-tuning (CVE + CoMoE), method.md section 2.

CoMoE replaces only ``layer.mlp`` of the chosen blocks (default: the second half of the blocks
that feed the LLM), so the encoder layer class and its forward stay those of transformers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from covft.models.distributed import gathered
from covft.models.names import block_param_names, block_prefix
from covft.models.towers import resolve_layers
from covft.nn.comoe import CONTEXTS, ROUTINGS, ContextualMoE
from covft.strategies.base import Strategy, StrategyOptions, register_strategy


@dataclass
class CovftOptions(StrategyOptions):
    num_experts: int = 4
    """Experts per CoMoE block (paper ablation: 2/4/8)."""
    routing: str = "dense"
    """dense (softmax over all experts, the paper's), sparse (top-k), uniform (fixed 1/E)."""
    top_k: int = 2
    """Experts per sample for sparse routing."""
    context: str = "cve"
    """Router input: cve (the paper's), text, image, concat."""
    load_balance_weight: float | None = None
    """Switch-style load-balancing loss weight for sparse routing (None: 0.01 when sparse). (ours)"""
    layers: list[int] | None = None
    """Explicit CoMoE blocks (overrides the default second half of the feeding blocks)."""
    start_layer: int | None = None
    """CoMoE in blocks start_layer..F-1."""
    last_n: int | None = None
    """CoMoE in the last N feeding blocks."""
    num_heads: int = 4
    """Heads of CVE's single-query attention."""
    train_layernorms: str = "all"
    """LayerNorms (layer_norm1/2) that train: all (every block, as the release: 529,007,664 parameters
    at ViT-L), feeding (only blocks that feed the LLM), none."""
    router_lr_scale: float = 0.1
    """Learning-rate multiplier of the routing path (router, CVE, concat projection). Identical
    upcycled experts give the routing path only rounding noise to learn from at first, and Adam
    turns any gradient into lr-sized steps, so at full lr dense routers collapse onto one expert;
    1.0 is the release's behaviour. Chosen from routing health on training data, docs/decisions.md
    "Routers that stay context-dependent". (ours)"""
    context_vectors: str | None = None
    """A file of the instructions' text-encoder vectors computed ahead (FrozenTextEncoder.save_vectors),
    pinned in the encoder's cache: a pure speed-up, the vectors are those the encoder computes. (ours)"""


@register_strategy
class Covft(Strategy):
    name = "covft"
    Options = CovftOptions
    changes_structure = True
    adds_beyond_stock = (
        "CVE and CoMoE (vision MLP experts routed on the instruction by a separate text encoder)"
    )

    @property
    def needs_text(self) -> bool:  # type: ignore[override]
        o = self.options
        return o.routing != "uniform" and o.context in ("cve", "text", "concat")

    def apply(self, model) -> None:
        o = self.options
        if o.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {o.routing!r}")
        if o.context not in CONTEXTS:
            hint = (
                " (the paper's 'N/A' row is plain full fine-tuning: method 'full')"
                if o.context == "none"
                else ""
            )
            raise ValueError(f"context must be one of {CONTEXTS}, got {o.context!r}{hint}")
        if not o.router_lr_scale > 0:
            raise ValueError(f"router_lr_scale must be > 0, got {o.router_lr_scale}")
        if o.train_layernorms not in ("all", "feeding", "none"):
            raise ValueError(f"train_layernorms must be all, feeding or none, got {o.train_layernorms!r}")
        chosen = resolve_layers(
            model.feeding_layers, layers=o.layers, start_layer=o.start_layer, last_n=o.last_n
        )
        text_dim = model.ensure_text_encoder().hidden_size if self.needs_text else None
        if self.needs_text and o.context_vectors:
            self._load_context_vectors(model.text_encoder, o.context_vectors)
        for index in chosen:
            block = model.encoder_layers[index]
            mlp = block.mlp
            with gathered(list(mlp.parameters())):
                block.mlp = ContextualMoE.from_mlp(
                    mlp,
                    model.context,
                    text_dim,
                    num_experts=o.num_experts,
                    routing=o.routing,
                    top_k=o.top_k,
                    context=o.context,
                    num_heads=o.num_heads,
                    load_balance_weight=o.load_balance_weight,
                )

    @staticmethod
    def _load_context_vectors(encoder, path: str) -> None:
        """Pin precomputed vectors; a missing file only costs speed (they are computed on demand)."""
        if not Path(path).is_file():
            warnings.warn(
                f"context_vectors={path!r} does not exist: the instructions are encoded on demand instead",
                stacklevel=3,
            )
            return
        encoder.load_vectors(path)

    def vision_trainable(self, model):
        names = [n for i in model.routed_blocks for n in block_param_names(model, i, "mlp.")]
        if self.options.train_layernorms != "none":
            _, layers = block_prefix(model)
            count = len(layers) if self.options.train_layernorms == "all" else model.feeding_layers
            for i in range(count):
                for norm in model.family.block_norms:
                    names += block_param_names(model, i, norm + ".")
        return names

    def lr_scales(self, model) -> dict[str, float]:
        """``router_lr_scale`` for every parameter of the routing path of each CoMoE block."""
        if self.options.router_lr_scale == 1.0:
            return {}
        routing = ("mlp.router.", "mlp.cve.", "mlp.concat_proj.")
        return {
            name: self.options.router_lr_scale
            for i in model.routed_blocks
            for sub in routing
            for name in block_param_names(model, i, sub)
        }
