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

import json
import random
from pathlib import Path
from typing import Any

from covft.recipes.world.scene import Scene, WorldObject, training_annotations

DENSE_PROMPT = "Describe the image in detail."
"""The human turn of a dense-caption conversation (after ``<image>``)."""
WHAT_IS_AT = "What is at {}?"
WHERE_IS = "Where is the {}?"
"""The two questions of grounded captions (:func:`grounded_caption_record`)."""
GROUNDED_VERSION = "1"


def position(x: float, y: float) -> str:
    """A centre in percent of the image side: ``"18,41"``."""
    return f"{round(100 * x)},{round(100 * y)}"


def object_words(obj: WorldObject) -> str:
    """An object in words, without its position: ``"small striped red star labelled B"``."""
    texture = "" if obj.texture == "solid" else f"{obj.texture} "
    label = f" labelled {obj.label}" if obj.label is not None else ""
    return f"{obj.size} {texture}{obj.color} {obj.shape}{label}"


def _object_phrase(scene: Scene, index: int) -> str:
    obj = scene.objects[index]
    return f"{object_words(obj)} at {position(obj.x, obj.y)}"


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


def grounded_caption_record(
    sample_id: str, image: str, scene: Scene, rng: random.Random, turns: int
) -> dict[str, Any] | None:
    """Up to ``turns`` grounded captions of ``image`` as one conversation (None: no object).

    The dense caption cut into single objects, both ways, as Kosmos-2's and Shikra's grounded
    pretraining pairs a phrase with where it is: ``"What is at 18,41?"`` -> ``"small striped red
    star"`` and, for an object that no other object of the scene shares the words of,
    ``"Where is the small striped red star?"`` -> ``"at 18,41"``; objects in a seeded order, the
    question's kind alternating from a seeded start. Short answers put the whole loss on reading
    one place, which the long dense caption spreads over a scene.
    """
    objects = list(scene.objects)
    if not objects:
        return None
    words = [object_words(obj) for obj in objects]
    order = rng.sample(range(len(objects)), min(turns, len(objects)))
    where_first = rng.random() < 0.5
    conversation = []
    for k, i in enumerate(order):
        here = position(objects[i].x, objects[i].y)
        if (k % 2 == 0) == where_first and words.count(words[i]) == 1:
            question, answer = WHERE_IS.format(words[i]), f"at {here}"
        else:
            question, answer = WHAT_IS_AT.format(here), words[i]
        conversation += [
            {"from": "human", "value": f"<image>\n{question}" if k == 0 else question},
            {"from": "gpt", "value": answer},
        ]
    return {"id": sample_id, "image": image, "conversations": conversation}


def write_grounded_captions(world_dir: str | Path, turns: int, seed: int = 0) -> Path:
    """``<world>/grounded_captions.json``: :func:`grounded_caption_record` of every training
    image (from ``annotations/train.jsonl``), unless an identical one is there (its sidecar
    ``.meta.json`` records ``turns``, ``seed`` and :data:`GROUNDED_VERSION`, written last)."""
    world = Path(world_dir)
    target = world / "grounded_captions.json"
    meta_path = world / "grounded_captions.json.meta.json"
    meta = {"version": GROUNDED_VERSION, "turns": turns, "seed": seed}
    if target.is_file() and meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf-8")) == meta:
        return target
    annotations = training_annotations(world, "grounded captions need the scenes of a world's images")
    rng = random.Random(seed)
    scenes = [(entry["id"], entry["image"], Scene.from_dict(entry["scene"])) for entry in annotations]
    records = [r for r in (grounded_caption_record(*scene, rng, turns) for scene in scenes) if r is not None]
    target.write_text(json.dumps(records, ensure_ascii=False) + "\n", encoding="utf-8")
    meta_path.write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return target


__all__ = [
    "DENSE_PROMPT",
    "WHAT_IS_AT",
    "WHERE_IS",
    "dense_caption_record",
    "describe",
    "grounded_caption_record",
    "object_words",
    "position",
    "write_grounded_captions",
]
