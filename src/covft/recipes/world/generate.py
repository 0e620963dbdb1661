"""Writing a whole world to disk: the training mix, the stage-1 captions and the held-out suite.

Layout of ``out_dir``::

    train.json              LLaVA conversations (the instruction-tuning mix)
    captions.json           one caption per training image (stage 1 "plain" / stage 0 contrastive)
    dense_captions.json     one complete description per training image (detailed captions)
    images/train/*.png      training images
    suite/<name>.jsonl      the 12 held-out benchmarks (docs/benchmark-records.md)
    suite/images/<name>/    their images
    annotations/train.jsonl scene of every training image (objects, boxes' source of truth)
    annotations/suite.jsonl scene of every suite image
    conflict/grounding.json the same training images (objects, clutter, text scenes) asked for a box,
    conflict/caption.json   ... and for a caption: the paper's Fig. 1b/c visual preference conflict
    meta.json               config, version, counts; written last, so a partial world regenerates
    meta.incomplete.json    only while a world is written (or was interrupted): the files are its own
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from covft.errors import UserError
from covft.recipes.world.describe import dense_caption_record
from covft.recipes.world.suite import BUILDERS, build_suite
from covft.recipes.world.suite_items import pixel_hash
from covft.recipes.world.tasks import FAMILY_WEIGHTS, caption, conflict_pair, make_sample
from covft.utils import write_text_atomic
from covft.utils.config import ConfigError

WORLD_VERSION = "6"
"""Bumped whenever the same config would produce different files."""

TRAIN_STREAM = 1
"""Random-stream tag of training samples (the suite uses another)."""

CONFLICT_STREAM = 3
"""Random-stream tag of the grounding-vs-caption conflict pair's queries."""


@dataclass
class WorldConfig:
    """Everything that determines a world; equal configs give byte-identical worlds."""

    size: int = 2000
    seed: int = 0
    suite_size: int = 100
    image_size: int = 64
    min_objects: int = 2
    max_objects: int = 5
    occlusion_rate: float = 0.15
    alt_phrasing_rate: float = 0.1
    family_weights: dict[str, float] = field(default_factory=lambda: dict(FAMILY_WEIGHTS))

    def __post_init__(self) -> None:
        """Refuse a setting no world can have (a :class:`ConfigError`, before anything is written)."""
        if self.size < 0 or self.suite_size < 0:
            raise ConfigError(
                f"size and suite_size must be >= 0, got {self.size} and {self.suite_size}. "
                "Fix: give 0 or more training conversations and suite units (--size, --suite-size)"
            )
        if self.image_size < 32:
            raise ConfigError(
                f"image_size must be at least 32 pixels, got {self.image_size}. "
                "Fix: give --image-size 32 or more (default 64)"
            )
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            raise ConfigError(
                f"need 1 <= min_objects <= max_objects <= 6, got {self.min_objects}, {self.max_objects}"
            )
        unknown = set(self.family_weights) - set(FAMILY_WEIGHTS)
        if unknown:
            raise ConfigError(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILY_WEIGHTS)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in meta.json."""
        return asdict(self)

    @property
    def scene_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`covft.recipes.world.render.draw_scene`."""
        return {
            "min_objects": self.min_objects,
            "max_objects": self.max_objects,
            "occlusion_rate": self.occlusion_rate,
        }


def allocate(size: int, weights: dict[str, float]) -> list[str]:
    """Family of each of ``size`` samples, in a fixed order; proportional to ``weights`` (largest
    remainder), with every family of positive weight present once ``size`` allows it."""
    families = [f for f, w in weights.items() if w > 0]
    total = sum(weights[f] for f in families)
    exact = {f: size * weights[f] / total for f in families}
    counts = {f: int(np.floor(v)) for f, v in exact.items()}
    if size >= len(families):
        for f in families:
            counts[f] = max(counts[f], 1)
    while sum(counts.values()) > size:
        largest = max((f for f in families if counts[f] > 1), key=lambda f: (counts[f] - exact[f], counts[f]))
        counts[largest] -= 1
    for f in sorted(families, key=lambda f: counts[f] - exact[f])[: size - sum(counts.values())]:
        counts[f] += 1
    return [f for f in families for _ in range(counts[f])]


def _dump(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _write_training(out: Path, config: WorldConfig, progress: Callable[[int], Any]) -> dict[str, Any]:
    """Write the training images, train.json, captions.json, the conflict pair and the annotations.

    Returns the counts for meta.json and the training images' pixel hashes (which the suite avoids).
    """
    image_dir = out / "images" / "train"
    image_dir.mkdir(parents=True, exist_ok=True)
    families = allocate(config.size, config.family_weights)
    order = np.random.default_rng([config.seed, TRAIN_STREAM, 0]).permutation(len(families))
    records, captions, dense, annotations, hashes = [], [], [], [], set()
    conflict: dict[str, list[dict[str, Any]]] = {"grounding": [], "caption": []}
    counts: dict[str, int] = {}
    for i, j in enumerate(order):
        family = families[int(j)]
        counts[family] = counts.get(family, 0) + 1
        rng = np.random.default_rng([config.seed, TRAIN_STREAM, 1, i])
        sample = make_sample(family, rng, config.image_size, config.alt_phrasing_rate, **config.scene_options)
        sample_id = f"world-{i:06d}"
        image = None
        if sample.scene is not None and sample.rendering is not None:
            image = f"images/train/{i:06d}.png"
            sample.rendering.image.save(out / image, format="PNG")
            hashes.add(pixel_hash(sample.rendering.image))
            text = caption(sample.scene)
            captions.append(
                {
                    "id": sample_id,
                    "image": image,
                    "caption": text,
                    "conversations": [
                        {"from": "human", "value": "<image>\nDescribe the image briefly."},
                        {"from": "gpt", "value": text},
                    ],
                }
            )
            dense.append(dense_caption_record(sample_id, image, sample.scene))
            if sample.scene.kind in ("objects", "clutter", "text"):
                pair_rng = np.random.default_rng([config.seed, CONFLICT_STREAM, i])
                for pair_sample in conflict_pair(sample.scene, sample.rendering, pair_rng):
                    conflict[pair_sample.family].append(pair_sample.record(sample_id, image))
            annotations.append(
                {
                    "id": sample_id,
                    "image": image,
                    "family": family,
                    "kinds": sample.kinds,
                    "targets": sample.targets,
                    "scene": sample.scene.to_dict(),
                }
            )
        records.append(sample.record(sample_id, image))
        progress(1)
    _dump(out / "train.json", records)
    _dump(out / "captions.json", captions)
    _dump(out / "dense_captions.json", dense)
    (out / "conflict").mkdir(exist_ok=True)
    for task, task_records in conflict.items():
        _dump(out / "conflict" / f"{task}.json", task_records)
    (out / "annotations").mkdir(exist_ok=True)
    (out / "annotations" / "train.jsonl").write_text(
        "".join(json.dumps(a) + "\n" for a in annotations), encoding="utf-8"
    )
    return {
        "counts": counts,
        "n_train": len(records),
        "n_images": len(captions),
        "n_conflict_images": len(conflict["caption"]),
        "hashes": hashes,
    }


OWNED = (
    "images",
    "suite",
    "annotations",
    "conflict",
    "meta.json",
    "train.json",
    "captions.json",
    "dense_captions.json",
)
"""What :func:`make_world` writes into ``out_dir``, and deletes there before regenerating a world."""

INCOMPLETE = "meta.incomplete.json"
"""Written before anything else and removed after ``meta.json``: it marks a world being written (or
interrupted), so that a rerun knows the partial files are its own to replace."""


def _world_meta(out: Path) -> dict[str, Any] | None:
    """The meta.json in ``out`` when it is one a world wrote (any config or version), else None."""
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and {"version", "config"} <= meta.keys() else None


def _current_meta(out: Path, config: WorldConfig) -> dict[str, Any] | None:
    """The meta of the complete world in ``out`` when it was made by ``config`` and this version."""
    meta = _world_meta(out)
    if meta is None:
        return None
    return meta if meta.get("version") == WORLD_VERSION and meta.get("config") == config.to_dict() else None


def _clear_previous_world(out: Path, config: WorldConfig) -> None:
    """Delete the previous world's outputs in ``out``; refuse when ``out`` holds them but is no world.

    A directory is a world when it holds a world's meta.json (complete) or :data:`INCOMPLETE`
    (interrupted); anything else carrying one of the :data:`OWNED` names is someone else's data.
    """
    present = [name for name in OWNED if (out / name).exists() or (out / name).is_symlink()]
    if present and _world_meta(out) is None and not (out / INCOMPLETE).is_file():
        raise UserError(
            f"{out} holds {', '.join(present)} but is not a covft world (no world meta.json), and making "
            f"a world there would replace them. Fix: choose another output directory (--out), or delete "
            f"{out} first"
        )
    out.mkdir(parents=True, exist_ok=True)
    _dump(out / INCOMPLETE, {"version": WORLD_VERSION, "config": config.to_dict()})
    for name in present:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()


def world_is_current(
    out_dir: str | Path,
    size: int = 2000,
    seed: int = 0,
    suite_size: int = 100,
    image_size: int = 64,
    **options: Any,
) -> bool:
    """Whether :func:`make_world` with these arguments would reuse ``out_dir`` as it is."""
    config = WorldConfig(size=size, seed=seed, suite_size=suite_size, image_size=image_size, **options)
    return _current_meta(Path(out_dir), config) is not None


def make_world(
    out_dir: str | Path,
    size: int = 2000,
    seed: int = 0,
    suite_size: int = 100,
    image_size: int = 64,
    *,
    force: bool = False,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Generate (or reuse) a conflict world in ``out_dir`` and return its meta dict.

    ``size`` training conversations, ``suite_size`` scoring units per held-out benchmark,
    ``image_size`` pixel squares; other :class:`WorldConfig` fields go in ``options``. When
    ``out_dir/meta.json`` already records the same config and version, nothing is regenerated
    (unless ``force``); a previous (or interrupted) world is replaced. A directory that holds any
    of the world's file names without being a world raises :class:`UserError` and is left as it is.
    """
    config = WorldConfig(size=size, seed=seed, suite_size=suite_size, image_size=image_size, **options)
    out = Path(out_dir)
    meta_path = out / "meta.json"
    if not force and (meta := _current_meta(out, config)) is not None:
        return meta
    _clear_previous_world(out, config)
    bar = tqdm(
        total=config.size + len(BUILDERS) * config.suite_size, desc="world", disable=not progress, unit="item"
    )
    training = _write_training(out, config, bar.update)
    suite_counts = build_suite(
        out / "suite",
        config.seed,
        config.suite_size,
        config.image_size,
        config.scene_options,
        training["hashes"],
        progress=bar.update,
    )
    bar.close()
    meta = {
        "version": WORLD_VERSION,
        "config": config.to_dict(),
        "counts": {f: training["counts"].get(f, 0) for f in config.family_weights},
        "n_train": training["n_train"],
        "n_images": training["n_images"],
        "n_conflict_images": training["n_conflict_images"],
        "suite": suite_counts,
        "files": {
            "train": "train.json",
            "captions": "captions.json",
            "dense_captions": "dense_captions.json",
            "suite": "suite",
            "annotations": "annotations",
            "conflict": ["conflict/grounding.json", "conflict/caption.json"],
        },
    }
    _dump(meta_path, meta)  # last: its presence marks the world complete
    (out / INCOMPLETE).unlink(missing_ok=True)
    return meta
