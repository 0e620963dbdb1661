"""Full parameter names of the parts of a :class:`~covft.models.CovftModel` (as in ``named_parameters()``).

Strategies declare what they train with these names; the wrapper uses them to tell which
vision parameters can receive a gradient. Paths come from the model's family
(:mod:`covft.models.families`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from covft.models.towers import blocks

VISION_PREFIX = "llava.model.vision_tower."
"""The tower's prefix in the LLaVA families (``model.vision_prefix`` is the model's own)."""
PROJECTOR_PREFIX = "llava.model.multi_modal_projector."
"""The projector's prefix in the LLaVA families."""


def vision_names(model, predicate: Callable[[str], bool]) -> list[str]:
    """Vision-tower parameter names (full, as in ``model.named_parameters()``) selected by ``predicate``."""
    prefix = model.vision_prefix
    return [n for n, _ in model.named_parameters() if n.startswith(prefix) and predicate(n)]


def feeding_names(model) -> list[str]:
    """Parameters of the vision tower on the path to the LLM: embeddings, pre-norm, blocks 0..F-1.

    Blocks past ``vision_feature_layer``, the post-LayerNorm and SigLIP's pooling head never
    affect LLaVA's output, so training them would be a no-op that DDP rejects.
    """
    prefix, _ = block_prefix(model)
    feeding = model.feeding_layers
    tower = model.vision_prefix
    projector = model.family.projector_prefixes()

    def on_path(name: str) -> bool:
        if name.startswith(projector):  # a merger inside the tower (Qwen) is the projector part
            return False
        rest = name[len(tower) :]
        if rest.startswith(prefix):
            return int(rest[len(prefix) :].split(".", 1)[0]) < feeding
        return not any(part in rest for part in model.family.off_path)

    return vision_names(model, on_path)


def block_prefix(model) -> tuple[str, nn.ModuleList]:
    """('encoder.layers.', layers) relative to the vision tower."""
    name, layers = blocks(model.llava)
    return name + ".", layers


def block_param_names(model, index: int, sub: str = "") -> list[str]:
    """Full names of the parameters of vision block ``index`` (optionally under a submodule)."""
    prefix, _ = block_prefix(model)
    start = f"{model.vision_prefix}{prefix}{index}.{sub}"
    return [n for n, _ in model.named_parameters() if n.startswith(start)]
