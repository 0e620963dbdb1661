"""The conflict world: procedural images and LLaVA conversations with visual preference conflicts.

Task families need different visual features from the same images (precise positions for
grounding and counting, position-free identity and colour for captions and attributes, fine
strokes for reading), so fine-tuning a vision encoder on the mix pulls it in conflicting
directions by construction. :func:`make_world` writes a training mix, stage-1 captions and a
held-out 12-benchmark suite; see docs/world.md.
"""

from covft.recipes.world.generate import WORLD_VERSION, WorldConfig, allocate, make_world, world_is_current
from covft.recipes.world.tasks import FAMILIES, FAMILY_WEIGHTS

__all__ = [
    "FAMILIES",
    "FAMILY_WEIGHTS",
    "WORLD_VERSION",
    "WorldConfig",
    "allocate",
    "make_world",
    "world_is_current",
]
