"""What every benchmark builder of the suite shares: held-out scenes, saved images, item records."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covft.eval.benchmarks import ImageRef
from covft.recipes.world import formats
from covft.recipes.world.qa import QA
from covft.recipes.world.questions import ask
from covft.recipes.world.render import Rendering, draw_scene
from covft.recipes.world.scene import Scene
from covft.recipes.world.tasks import KIND_SCENES


def pixel_hash(image: Any) -> str:
    """Content hash of an image's decoded RGB pixels (format-independent)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return hashlib.sha1(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()


@dataclass
class SuiteBuilder:
    """Draws held-out scenes and saves their images under ``directory/images/<benchmark>/``."""

    directory: Path
    image_size: int
    scene_options: dict[str, Any]
    training_hashes: set[str]
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def draw(self, rng: np.random.Generator, kind: str) -> tuple[Scene, Rendering]:
        """A scene of ``kind`` whose pixels never occur in the training set."""
        for _ in range(100):
            scene, rendering = draw_scene(rng, kind, self.image_size, **self.scene_options)
            if pixel_hash(rendering.image) not in self.training_hashes:
                return scene, rendering
        raise RuntimeError("could not draw a suite image that differs from every training image")

    def question(
        self, rng: np.random.Generator, kinds: tuple[str, ...], scene_kinds: tuple[str, ...] | None = None
    ) -> tuple[QA, Scene, Rendering]:
        """A held-out scene and a question of one of ``kinds`` about it."""
        for _ in range(200):
            kind = kinds[int(rng.integers(len(kinds)))]
            options = scene_kinds or KIND_SCENES[kind]
            scene, rendering = self.draw(rng, options[int(rng.integers(len(options)))])
            qa = ask((kind,), scene, rendering, rng)
            if qa is not None:
                return qa, scene, rendering
        raise RuntimeError(f"no held-out scene fits question kinds {kinds}")

    def save(self, benchmark: str, key: str, scene: Scene, rendering: Rendering) -> ImageRef:
        """Write the image as ``images/<benchmark>/<key>.png`` and remember its scene."""
        relative = f"images/{benchmark}/{key}.png"
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        rendering.image.save(path, format="PNG")
        self.annotations.append({"benchmark": benchmark, "image": relative, "scene": scene.to_dict()})
        return ImageRef(path)


def choice_item(
    item_id: str, image: ImageRef, question: str, options: list[str], answer: int, hint: str | None = None
) -> dict[str, Any]:
    """A multiple-choice suite item: lettered options, the answer's letter."""
    return {
        "id": item_id,
        "image": image,
        "prompt": formats.multiple_choice_prompt(question, options, hint),
        "context": formats.multiple_choice_context(question, options, hint),
        "options": {formats.LETTERS[i]: text for i, text in enumerate(options)},
        "answer": formats.LETTERS[answer],
    }


def short_item(item_id: str, image: ImageRef, question: str) -> dict[str, Any]:
    """A short-answer suite item (the caller adds the answer)."""
    return {
        "id": item_id,
        "image": image,
        "prompt": formats.short_answer_prompt(question),
        "context": question,
    }
