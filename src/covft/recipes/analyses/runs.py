"""Training runs of the analyses: one validated config per run, the same loop as the recipe.

The analyses train through :func:`covft.train.train` and observe it with callbacks
(:mod:`covft.analysis`), so what they measure is what the recipe does. Helpers here turn an
analysis' few knobs (strategy, steps, batch size, learning rate, seed) into a validated
:class:`~covft.train.TrainConfig` on top of an optional YAML recipe plus ``key=value`` overrides.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

RUNS_FOLDER = "analysis_runs"
"""Sub-folder of an analysis' output folder that holds its training runs (one folder per run)."""


def analysis_config(
    *,
    config: str | None,
    overrides: Sequence[str],
    method: str,
    train_file: str | Path,
    image_folder: str | Path | None,
    output_dir: str | Path,
    steps: int,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
) -> Any:
    """A validated stage-2 :class:`~covft.train.TrainConfig` for one analysis run.

    ``config`` (a YAML path or packaged name, or ``None`` for the schema defaults) and
    ``overrides`` (``key=value``) set everything else (model, ``model_options.*``, ``init_from``,
    schedule...). The analysis then fixes the strategy, data, steps and output, and turns off
    what would disturb a controlled comparison: intermediate checkpoints, trackers, and
    length-grouped batching (so two runs over different texts of the same images see the images
    in the same order). ``method_options`` of the recipe apply only when ``method`` is the recipe's.
    """
    from covft.train import load_config

    cfg = load_config(config, list(overrides))
    if cfg.method != method:
        cfg.method_options = {}
    cfg.method = method
    cfg.stage = 2
    cfg.data.train = str(train_file)
    cfg.data.image_folder = None if image_folder is None else str(image_folder)
    cfg.data.group_by_modality_length = False
    cfg.output_dir = str(output_dir)
    cfg.resume = False
    cfg.train.max_steps = int(steps)
    cfg.train.save_steps = 0
    cfg.train.report_to = "none"
    if batch_size is not None:
        cfg.train.batch_size = int(batch_size)
    if lr is not None:
        cfg.train.lr = float(lr)
    if seed is not None:
        cfg.train.seed = int(seed)
    return cfg.validate()


@dataclass
class RunSettings:
    """What every training run of one analysis shares: recipe, overrides, schedule and seed."""

    config: str | None = None
    """YAML recipe (path or packaged name); ``None``: the schema defaults."""
    overrides: Sequence[str] = field(default_factory=tuple)
    """``key=value`` recipe overrides (model, ``model_options.*``, ``init_from``...)."""
    steps: int = 100
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    image_folder: str | Path | None = None
    keep_runs: bool = False
    """Keep each run's output directory (the trained model) instead of deleting it after training."""

    def check(self, strategies: Sequence[str]) -> None:
        """Refuse, before the first run trains, what would stop or mislead a later one: no strategy or
        one named twice, an unknown name, fewer than one step (0 would train whole epochs), and a
        recipe, override or strategy option that does not hold for one of the strategies."""
        from covft.strategies.base import UnknownMethodError, UnknownOptionError, get_strategy, make_options
        from covft.utils.config import ConfigError

        if not strategies:
            raise ConfigError("no strategy given: name at least one, e.g. --strategies full,covft")
        twice = sorted({name for name in strategies if list(strategies).count(name) > 1})
        if twice:
            raise ConfigError(f"strategies named twice: {', '.join(twice)}; give each strategy once")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps} (--steps: optimizer steps per run)")
        for strategy in strategies:
            try:
                found = get_strategy(strategy)  # names the closest registered one
            except UnknownMethodError as error:
                raise ConfigError(f"--strategies: {error}") from error
            try:
                make_options(found, self._config(strategy).method_options)
            except UnknownOptionError as error:
                raise ConfigError(f"{error} (method_options of the recipe or --set)") from error

    def _config(self, strategy: str, data: str | Path = "-", run_dir: str | Path = "-") -> Any:
        return analysis_config(config=self.config, overrides=self.overrides, method=strategy, train_file=data,
                               image_folder=self.image_folder, output_dir=run_dir, steps=self.steps,
                               batch_size=self.batch_size, lr=self.lr, seed=self.seed)  # fmt: skip

    def train(self, strategy: str, data: str | Path, run_dir: str | Path, callbacks: Iterable[Any]) -> Any:
        """Train ``strategy`` on ``data`` into a fresh ``run_dir``; returns the ``TrainResult``."""
        from covft.train import train

        run_dir = Path(run_dir)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        config = self._config(strategy, data, run_dir)
        try:
            return train(config, callbacks=list(callbacks))
        finally:
            if not self.keep_runs:
                shutil.rmtree(run_dir, ignore_errors=True)


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it exists and holds nothing (never anything the user put there)."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def open_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as RGB, its file closed."""
    with Image.open(path) as handle:
        return handle.convert("RGB")
