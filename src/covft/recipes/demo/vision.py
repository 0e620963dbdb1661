"""The demo's vision tower: its architecture, its image processor and loading a stage-0 tower into a model.

Stage 0 (:mod:`covft.recipes.demo.stage0`) trains exactly this architecture; both presets
(:mod:`covft.recipes.demo.presets`) build it and take the trained weights as ``vision_weights``.
"""

from __future__ import annotations

import os

from covft.models.assembly import image_processor_for, vision_config
from covft.models.model import CovftModel

#: The demo's vision tower: small enough for CPU, deep enough for "second half" CoMoE blocks.
TINY_VISION: dict[str, int] = {
    "hidden": 128,
    "layers": 6,
    "heads": 4,
    "image_size": 64,
    "patch_size": 8,
    "intermediate": 512,
}
#: Normalisation of the demo towers' inputs (the world's images are mid-grey on average).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)


def tiny_vision_config(
    vision_hidden: int | None = None, vision_layers: int | None = None, image_size: int | None = None
):
    """The ``CLIPVisionConfig`` of the demo tower (stage 0 trains exactly this architecture).

    ``vision_hidden`` / ``vision_layers`` / ``image_size`` shrink it (tests); the MLP stays 4x the
    width, the patch 8 pixels.
    """
    options = dict(TINY_VISION)
    if image_size is not None:
        options["image_size"] = image_size
    if vision_hidden is not None:
        options["hidden"], options["intermediate"] = vision_hidden, 4 * vision_hidden
    if vision_layers is not None:
        options["layers"] = vision_layers
    return vision_config("clip", **options)


def demo_image_processor(image_size: int = TINY_VISION["image_size"]):
    """The image processor shared by stage 0 and the presets (same pixels in, same features out)."""
    return image_processor_for("clip", image_size, mean=IMAGE_MEAN, std=IMAGE_STD)


def load_vision_weights(model: CovftModel, path: str | os.PathLike) -> None:
    """Copy a stage-0 tower (safetensors of a ``CLIPVisionModel`` state dict) into ``model``."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    expected = model.vision_tower.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path} does not fit the preset's vision tower (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shapes {mismatched[:3]}): rerun stage 0 with the same tower options"
        )
    model.vision_tower.load_state_dict(state)
