"""The visual preference conflict analysis (paper Fig. 1b/c) as a run: train A and B, measure.

The measurement (:class:`covft.analysis.conflict.ConflictRecorder`, the distances) is in
:mod:`covft.analysis.conflict`; this driver picks the two sample sets, trains both runs per
strategy through :class:`~covft.recipes.analyses.runs.RunSettings` and writes the result.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from covft.analysis import plots
from covft.analysis.conflict import SNAPSHOTS_FOLDER, ConflictRecorder, measure_steps, split_by_task
from covft.analysis.runs import block_list, load_records, write_records
from covft.recipes.analyses.runs import RUNS_FOLDER, RunSettings, open_rgb, remove_if_empty
from covft.train.trainer import TrainerCallback
from covft.utils import write_json_atomic
from covft.utils.config import ConfigError

DEFINITIONS = {
    "param_l2": "||theta_A - theta_B||_2 over all parameters of the block (CoMoE: experts, router, CVE, norms)",
    "param_relative": "param_l2 / ||theta_block at step 0||_2",
    "feature_l2": "mean over probe images of ||H_A - H_B||_F / sqrt(tokens) of the block's output, same "
    "inputs (query of A); cumulative: includes changes of earlier blocks and embeddings",
    "outside_l2": "L2 distance of the vision parameters outside the blocks (embeddings, pre/post norms)",
}


def _load_probe(samples: Sequence[dict[str, Any]], image_folder: str | Path | None) -> list[dict[str, Any]]:
    probe = []
    for sample in samples:
        path = Path(sample["image"])
        if image_folder is not None and not path.is_absolute():
            path = Path(image_folder) / path
        probe.append({"id": sample["id"], "image": open_rgb(path), "conversations": sample["conversations"]})
    return probe


def run_conflict(
    samples_a: Sequence[dict[str, Any]],
    samples_b: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    image_folder: str | Path | None = None,
    strategies: Sequence[str] = ("full", "covft"),
    steps: int = 100,
    every: int = 10,
    probe_size: int = 8,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    config: str | None = None,
    overrides: Sequence[str] = (),
    tasks: tuple[str, str] = ("a", "b"),
    keep_runs: bool = False,
    keep_snapshots: bool = False,
) -> dict[str, Any]:
    """Train A and B for every strategy and return the distances (also the JSON's content).

    ``samples_a[i]`` and ``samples_b[i]`` should show the same image (see :func:`split_by_task`).
    Each run starts from the same model (``config`` + ``overrides``: model, ``init_from``...),
    with the same seed and schedule. Runs go to ``out_dir/analysis_runs`` and are deleted
    after measuring unless ``keep_runs``.
    """
    if not samples_a or not samples_b:
        raise ValueError("both runs need at least one sample")
    settings = RunSettings(config, overrides, steps, batch_size, lr, seed, image_folder, keep_runs)
    settings.check(strategies)  # before anything is written or trained
    if every < 1:
        raise ConfigError(f"every must be >= 1, got {every} (--every: measure every N steps)")
    measured = measure_steps(steps, every)
    out = Path(out_dir)
    same_images = [s.get("image") for s in samples_a] == [s.get("image") for s in samples_b]
    files = (
        write_records(samples_a, out / "data" / f"{tasks[0]}.json"),
        write_records(samples_b, out / "data" / f"{tasks[1]}.json"),
    )
    probe = _load_probe(list(samples_a)[: max(1, probe_size)], image_folder)
    pair = _PairRuns(settings, out, probe, measured, tasks, files, keep_snapshots)
    results = {strategy: pair.run(strategy) for strategy in strategies}
    remove_if_empty(out / RUNS_FOLDER)
    remove_if_empty(out / SNAPSHOTS_FOLDER)
    return {
        "analysis": "conflict",
        "tasks": {"a": tasks[0], "b": tasks[1]},
        "n_samples": len(samples_a),
        "same_images": same_images,
        "probe_ids": [p["id"] for p in probe],
        "total_steps": steps,
        "strategies": results,
        "definitions": DEFINITIONS,
    }


class _PairRuns:
    """Run A (reference) then run B (compare) of one strategy, with the recorder between them."""

    def __init__(
        self,
        settings: RunSettings,
        out: Path,
        probe: list[dict[str, Any]],
        schedule: list[int],
        tasks: tuple[str, str],
        files: tuple[Path, Path],
        keep_snapshots: bool,
    ) -> None:
        self.settings, self.out, self.probe, self.schedule = settings, out, probe, schedule
        self.tasks, self.files, self.keep_snapshots = tasks, files, keep_snapshots

    def run(self, strategy: str) -> dict[str, Any]:
        snapshots = self.out / SNAPSHOTS_FOLDER / strategy
        losses: dict[str, list[float]] = {}
        recorder: ConflictRecorder | None = None
        info: dict[str, Any] = {}
        for role, task, data in zip(("reference", "compare"), self.tasks, self.files, strict=True):
            recorder = ConflictRecorder(
                snapshots, self.probe, self.schedule, role, keep_snapshots=self.keep_snapshots
            )
            info_hook = _ModelInfo()
            run_dir = self.out / RUNS_FOLDER / f"{strategy}-{task}"
            result = self.settings.train(strategy, data, run_dir, [recorder, info_hook])
            losses[task] = list(result.loss_history)
            info = info_hook.info
        if not self.keep_snapshots:
            shutil.rmtree(snapshots, ignore_errors=True)
        assert recorder is not None
        records = recorder.records
        return {
            "steps": [r["step"] for r in records],
            "param_l2": [r["param_l2"] for r in records],
            "param_relative": [r["param_relative"] for r in records],
            "feature_l2": [r["feature_l2"] for r in records],
            "outside_l2": [r["outside_l2"] for r in records],
            "final": {key: records[-1][key] for key in ("param_l2", "param_relative", "feature_l2")},
            "loss": losses,
            **info,
        }


class _ModelInfo(TrainerCallback):
    """Callback that notes the structure of the trained model once (for the report)."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def before_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        if not self.info:
            self.info = {
                "num_blocks": len(block_list(model)),
                "feeding_blocks": int(model.feeding_layers),
                "comoe_layers": list(model.routed_blocks),
                "trainable_vision_parameters": int(model.num_parameters("vision", trainable=True)),
            }


def conflict_samples(
    *,
    data: str | None = None,
    data_a: str | None = None,
    data_b: str | None = None,
    captions: str = "auto",
    task_a: str = "grounding",
    task_b: str = "caption",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], tuple[str, str]]:
    """The two sample sets and their task names: two files as given, or one file split by task.

    ``captions``: ``auto`` (``captions.json`` next to ``data`` when there is one), ``none``, or a
    path of caption records that :func:`split_by_task` may pair with ``data``'s images.
    """
    if data_a or data_b:
        if not (data_a and data_b):
            raise ValueError("give both --data-a and --data-b")
        tasks = (Path(data_a).stem, Path(data_b).stem)
        return load_records(data_a), load_records(data_b), tasks if tasks[0] != tasks[1] else ("a", "b")
    if not data:
        raise ValueError("give --data (split by task) or --data-a and --data-b")
    if task_a == task_b:
        raise ValueError("--task-a and --task-b must differ")
    captions_path = None
    if captions == "auto":
        candidate = Path(data).parent / "captions.json"
        captions_path = candidate if candidate.is_file() and candidate != Path(data) else None
    elif captions != "none":
        captions_path = Path(captions)
    records = load_records(data)
    samples_a, samples_b = split_by_task(
        records, task_a, task_b, load_records(captions_path) if captions_path else []
    )
    return samples_a, samples_b, (task_a, task_b)


def write_conflict(result: dict[str, Any], out: Path) -> None:
    """``conflict.json`` and the two figures (by depth, over training) into ``out``."""
    write_json_atomic(out / "conflict.json", result)
    plots.plot_conflict_depth(result, out / "conflict_depth.png")
    plots.plot_conflict_steps(result, out / "conflict_steps.png")
