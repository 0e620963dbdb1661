"""Complete scene descriptions in words: every object's size, texture, colour, shape and position,
the sign's text, a diagram's labels and arrows, a depth scene's order.

Two uses, one text:

- the **LM pretraining corpus** (:mod:`covft.recipes.world.corpus`) puts it where the image was, so
  the small LM learns every family's reasoning (counting, comparing positions, reading a rule,
  following an arrow) from text before it ever sees an image;
- **dense captions** (``dense_captions.json``, ShareGPT4V-style detailed captions) teach the
  projector (and, in the demo's stage 1b, the LM) to produce that text from the image, so that
  instruction tuning mostly has to connect image tokens to what the LM already does.

Objects are listed left to right (by the centre's x), except in depth scenes, which list them
from nearest to farthest. A position is the centre in percent of the image side, ``x,y`` from the
top left (``at 18,41``): compact (a few tokens, so the LM and stage 1 stay cheap) and enough for
every question of the world except a box's exact corners, which the grounding family learns from
the image.
"""

from __future__ import annotations

from covft.recipes.world.scene import Scene

DENSE_PROMPT = "Describe the image in detail."
"""The human turn of a dense-caption conversation (after ``<image>``)."""


def position(x: float, y: float) -> str:
    """A centre in percent of the image side: ``"18,41"``."""
    return f"{round(100 * x)},{round(100 * y)}"


def _object_phrase(scene: Scene, index: int) -> str:
    obj = scene.objects[index]
    texture = "" if obj.texture == "solid" else f"{obj.texture} "
    label = f" labelled {obj.label}" if obj.label is not None else ""
    return f"{obj.size} {texture}{obj.color} {obj.shape}{label} at {position(obj.x, obj.y)}"


def describe(scene: Scene) -> str:
    """The complete description of a scene (deterministic, one line)."""
    if scene.kind == "depth":
        order = sorted(range(len(scene.objects)), key=lambda i: scene.objects[i].depth)
        phrases = "; ".join(_object_phrase(scene, i) for i in order)
        return f"{len(order)} objects on the ground, nearest first: {phrases}."
    order = sorted(range(len(scene.objects)), key=lambda i: (scene.objects[i].x, scene.objects[i].y))
    phrases = "; ".join(_object_phrase(scene, i) for i in order)
    parts = []
    if scene.sign is not None:
        x1, y1, x2, y2 = scene.sign.box
        parts.append(f'sign "{scene.sign.text}" at {position((x1 + x2) / 2, (y1 + y2) / 2)}')
    parts.append(f"{len(order)} object{'' if len(order) == 1 else 's'}" + (f": {phrases}" if phrases else ""))
    if scene.kind == "diagram":
        names = [o.name for o in scene.objects]
        parts.append("Arrows: " + ", ".join(f"{names[a]} to {names[b]}" for a, b in scene.arrows))
    text = ". ".join(parts) + "."
    return text[0].upper() + text[1:]


def dense_caption_record(sample_id: str, image: str, scene: Scene) -> dict:
    """A LLaVA conversation asking for the detailed description of ``image``."""
    return {
        "id": sample_id,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{DENSE_PROMPT}"},
            {"from": "gpt", "value": describe(scene)},
        ],
    }


__all__ = ["DENSE_PROMPT", "dense_caption_record", "describe", "position"]
