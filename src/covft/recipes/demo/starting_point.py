"""The starting point of stage 2: the shipped one, verified against the code's recipe, or trained here.

The recipe itself (tower, LM, stage 1) is :mod:`covft.recipes.demo.pretrain`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covft.recipes.demo import pretrain as recipe
from covft.recipes.demo.layout import DemoError, DemoRun, StageLog, clock
from covft.recipes.demo.settings import DemoSettings


@dataclass
class StartingPoint:
    """The checkpoint every method and seed starts stage 2 from, and how it was made."""

    path: Path
    """A covft checkpoint (tower, projector, LM, tokenizer)."""
    key: str
    """The recipe's hash (:meth:`covft.recipes.demo.settings.PretrainSettings.key`)."""
    shipped: bool
    summary: dict[str, Any]
    """Per recipe stage: stage-0 retrieval and losses, final metrics, loss curves."""

    def model_options(self, settings: DemoSettings) -> dict[str, Any]:
        """``model_options`` for the trainer: the preset's keyword arguments (the seed comes from it)."""
        options = settings.pretrain.model_options()
        if settings.pretrain.preset == "tiny":
            options["tokenizer_dir"] = str(self.path.resolve())
        else:
            options["cache_dir"] = str(self.summary["cache_dir"])
        return options


def starting_point(run: DemoRun, log: StageLog) -> StartingPoint:
    """The shipped starting point (verified against the code's recipe), or the recipe trained here.

    The smol preset is always trained here (SmolLM2's weights are not ours to ship).
    """
    settings = run.settings.pretrain
    if run.from_scratch or settings.preset != "tiny":
        path, summary = recipe.pretrain(settings, cache_dir=run.cache_dir, progress=run.progress, log=log)
        summary["cache_dir"] = str(Path(run.cache_dir).resolve())
        return StartingPoint(path, settings.key(), False, summary)
    try:
        path = recipe.verify(run.shipped or recipe.SHIPPED, settings)
    except recipe.PretrainedMismatch as error:
        raise DemoError(str(error)) from error
    summary = json.loads((path / recipe.RECIPE_FILE).read_text(encoding="utf-8"))["summary"]
    log.record("starting point", "reused", clock(), key=settings.key())
    return StartingPoint(path, settings.key(), True, summary)
