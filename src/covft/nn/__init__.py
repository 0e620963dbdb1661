"""Pure PyTorch building blocks of CoVFT (no Hugging Face imports).

- :class:`ContextState`: the per-forward text context shared by all context-aware modules.
- :class:`ContextVectorExtractor`: CVE, one context vector per sample (method.md 2.2).
- :class:`FusedExperts` / :func:`fused_experts`: E MLP experts mixed per sample in two GEMMs.
- :class:`FusedSwiGLUExperts` / :func:`fused_swiglu_experts`: the same for gated (SwiGLU) MLPs.
- :class:`ContextualMoE`: CoMoE, the drop-in replacement of a ViT block's MLP (method.md 2.3).
- :class:`RoutedModule`: the base of modules that route samples over experts (gates, auxiliary loss).
"""

from covft.nn.comoe import CONTEXTS, ROUTINGS, ContextualMoE
from covft.nn.context import ContextState
from covft.nn.cve import ContextVectorExtractor
from covft.nn.experts import FusedExperts, FusedSwiGLUExperts, fused_experts, fused_swiglu_experts
from covft.nn.layers import PostNormResidualBlock, QuickGELU
from covft.nn.routing import RoutedModule

__all__ = [
    "CONTEXTS",
    "ROUTINGS",
    "ContextState",
    "ContextVectorExtractor",
    "ContextualMoE",
    "FusedExperts",
    "FusedSwiGLUExperts",
    "PostNormResidualBlock",
    "QuickGELU",
    "RoutedModule",
    "fused_experts",
    "fused_swiglu_experts",
]
