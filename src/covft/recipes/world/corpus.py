"""A text-only corpus for pretraining the demo's small language model on the world's language.

LLaVA starts from a pretrained LLM (Vicuna): it already speaks, follows the chat format and can
answer a question about a scene *described in words*; stage 1 then only has to teach a
projector to turn image features into something that LLM reads. The demo's ``tiny`` LM starts
from random weights, so without a pretraining of its own stage 1 would align a projector to
noise (its loss stays at ``ln(vocabulary)``). This corpus stands in for that pretraining:

- the world's instruction families, drawn on *fresh* scenes (a random stream of their own, so
  no training or suite scene is reused), in the same conversation format;
- the image replaced by its complete description in words (:func:`covft.recipes.world.describe.describe`:
  every object's size, texture, colour, shape and position, the sign's text, a diagram's labels and
  arrows, a depth scene's order): ``"<image>\\n"`` becomes ``"Image: <description>\\n"``
  (:func:`scene_text`), so the LM learns each family's reasoning (count, compare positions,
  apply a rule, follow an arrow) from text, as an LLM reads text, and instruction
  tuning later mostly has to connect image tokens to it;
- text-only samples as in the training mix;
- a share (``describe_share``) of description requests: ``"Describe the image in detail."``
  answered by the description of a fresh scene, with no image and nothing to condition on. The
  LM learns what a description looks like (the other records train only the answers, never the
  description in the prompt), so that stage 1 only has to teach it which description the image
  calls for.

Deterministic given the seed. Written by :func:`write_lm_corpus` (reused when its sidecar
metadata matches).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from covft.data.templates import IMAGE_PLACEHOLDER
from covft.recipes.world.describe import DENSE_PROMPT, describe
from covft.recipes.world.generate import WorldConfig, allocate
from covft.recipes.world.scene import Scene
from covft.recipes.world.tasks import make_sample

CORPUS_VERSION = "3"
DESCRIBE = "describe"
"""The corpus's own record kind: a description request (its scenes are drawn as captions' are)."""
"""Bumped whenever the same arguments would produce a different corpus."""
LM_STREAM = 5
"""Random-stream tag of the corpus's scenes (training samples use 1, the suite its own)."""


def scene_text(scene: Scene) -> str:
    """What stands in for the image in the corpus: ``"Image: "`` and the scene's full description."""
    return f"Image: {describe(scene)}"


def lm_corpus(
    size: int,
    seed: int = 0,
    image_size: int = 64,
    progress: Callable[[int], Any] | None = None,
    describe_share: float = 0.0,
    **options: Any,
) -> list[dict[str, Any]]:
    """``size`` text-only LLaVA records (no ``image`` key): ``describe_share`` of them description
    requests, the rest the world's families in its proportions.

    ``options`` are :class:`~covft.recipes.world.generate.WorldConfig` fields (scene options,
    ``family_weights``, ``alt_phrasing_rate``).
    """
    config = WorldConfig(size=size, seed=seed, image_size=image_size, **options)
    describing = round(describe_share * size)
    families = allocate(size - describing, config.family_weights) + [DESCRIBE] * describing
    order = np.random.default_rng([seed, LM_STREAM, 0]).permutation(len(families))
    records = []
    for i, j in enumerate(order):
        rng = np.random.default_rng([seed, LM_STREAM, 1, i])
        family = families[int(j)]
        sample = make_sample(
            "caption" if family == DESCRIBE else family, rng, image_size, config.alt_phrasing_rate,
            **config.scene_options,
        )  # fmt: skip
        record = sample.record(f"lm-{i:06d}", None)
        if family == DESCRIBE:
            record["conversations"] = [
                {"from": "human", "value": DENSE_PROMPT},
                {"from": "gpt", "value": describe(sample.scene)},
            ]
        elif sample.scene is not None:
            first = record["conversations"][0]
            first["value"] = first["value"].replace(IMAGE_PLACEHOLDER, scene_text(sample.scene), 1)
        records.append(record)
        if progress is not None:
            progress(1)
    return records


def write_lm_corpus(
    path: str | Path,
    size: int,
    seed: int = 0,
    image_size: int = 64,
    *,
    progress: Callable[[int], Any] | None = None,
    describe_share: float = 0.0,
    **options: Any,
) -> Path:
    """Write :func:`lm_corpus` as LLaVA JSON to ``path``, unless an identical one is already there.

    The sidecar ``<path>.meta.json`` records the arguments and :data:`CORPUS_VERSION`; it is
    written last, so an interrupted write is redone.
    """
    target = Path(path)
    meta_path = target.with_name(target.name + ".meta.json")
    meta = {
        "version": CORPUS_VERSION,
        "size": size,
        "seed": seed,
        "image_size": image_size,
        "describe_share": describe_share,
        "options": options,
    }
    if (
        target.is_file()
        and meta_path.is_file()
        and json.loads(meta_path.read_text(encoding="utf-8")) == json.loads(json.dumps(meta))
    ):
        return target
    records = lm_corpus(size, seed, image_size, progress=progress, describe_share=describe_share, **options)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(records, ensure_ascii=False) + "\n", encoding="utf-8")
    meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return target


__all__ = ["CORPUS_VERSION", "DESCRIBE", "LM_STREAM", "lm_corpus", "scene_text", "write_lm_corpus"]
