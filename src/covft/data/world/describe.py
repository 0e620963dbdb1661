"""Complete scene descriptions in words: every object's size, texture, colour, shape and box, the
sign's text, a diagram's labels and arrows, a depth scene's order.

Two uses, one text:

- the **LM pretraining corpus** (:mod:`covft.data.world.corpus`) puts it where the image was, so
  the small LM learns every family's reasoning (counting, comparing positions, reading a rule,
  following an arrow) from text before it ever sees an image;
- **dense captions** (``dense_captions.json``, ShareGPT4V-style detailed captions) teach the
  projector (and, in the demo's stage 1b, the LM) to produce that text from the image, so that
  instruction tuning mostly has to connect image tokens to what the LM already does.

Objects are listed left to right (by the centre's x), except in depth scenes, which list them
from nearest to farthest. Boxes are the grounding family's (LLaVA's normalised ``[x1, y1, x2,
y2]``, rounded outward).
"""

from __future__ import annotations

import numpy as np

from covft.data.world import formats
from covft.data.world.render import Rendering
from covft.data.world.scene import Scene
from covft.data.world.tasks import join_phrases

DENSE_PROMPT = "Describe the image in detail."
"""The human turn of a dense-caption conversation (after ``<image>``)."""


def sign_box(scene: Scene) -> tuple[float, float, float, float]:
    """The sign's box rounded outward to 2 decimals (as the grounding family gives it)."""
    assert scene.sign is not None
    x1, y1, x2, y2 = scene.sign.box
    return (
        np.floor(x1 * 100) / 100,
        np.floor(y1 * 100) / 100,
        np.ceil(x2 * 100) / 100,
        np.ceil(y2 * 100) / 100,
    )


def _object_phrase(scene: Scene, rendering: Rendering, index: int) -> str:
    obj = scene.objects[index]
    label = f" labelled {obj.label}" if obj.label is not None else ""
    return f"{obj.description()}{label} at {formats.box_text(rendering.normalized_box(index))}"


def describe(scene: Scene, rendering: Rendering) -> str:
    """The complete description of a rendered scene (deterministic, one line)."""
    if scene.kind == "depth":
        order = sorted(range(len(scene.objects)), key=lambda i: scene.objects[i].depth)
        phrases = [_object_phrase(scene, rendering, i) for i in order]
        return f"{len(phrases)} objects on the ground, from nearest to farthest: {join_phrases(phrases)}."
    order = sorted(range(len(scene.objects)), key=lambda i: (scene.objects[i].x, scene.objects[i].y))
    phrases = [_object_phrase(scene, rendering, i) for i in order]
    count = f"{len(phrases)} object{'' if len(phrases) == 1 else 's'}"
    parts = []
    if scene.sign is not None:
        parts.append(f'A sign that says "{scene.sign.text}" at {formats.box_text(sign_box(scene))}')
        parts.append(f"{count}: {join_phrases(phrases)}" if phrases else "No objects")
    else:
        parts.append(f"{count.capitalize()}: {join_phrases(phrases)}")
    if scene.kind == "diagram":
        names = [o.name for o in scene.objects]
        arrows = [f"{names[a]} to {names[b]}" for a, b in scene.arrows]
        parts.append(f"Arrows: {join_phrases(arrows)}")
    return ". ".join(parts) + "."


def dense_caption_record(sample_id: str, image: str, scene: Scene, rendering: Rendering) -> dict:
    """A LLaVA conversation asking for the detailed description of ``image``."""
    return {
        "id": sample_id,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{DENSE_PROMPT}"},
            {"from": "gpt", "value": describe(scene, rendering)},
        ],
    }


__all__ = ["DENSE_PROMPT", "dense_caption_record", "describe", "sign_box"]
