"""Stage 2 of the demo: instruction tuning of one strategy from the starting point, then the suite.

Every method and seed trains from the same starting point (:mod:`covft.recipes.demo.starting_point`)
on the world's mix, into ``<out>/seed<k>/stage2/<method>/``, and is scored on the suite as it is
and with shuffled images (the blind control) into ``<out>/seed<k>/eval[-shuffled]/<method>/``.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from covft.analysis.gradients import GradientFile
from covft.eval.generate import RESULTS_FILE, collect_items, evaluate, shuffle_images
from covft.recipes.demo.layout import GRADIENT_METHODS, GRADIENTS_FILE, DemoRun, StageLog, clock
from covft.recipes.demo.stages import train_loop, train_stage
from covft.recipes.demo.starting_point import StartingPoint
from covft.strategies import build_model, get_strategy


def _train_config(
    run: DemoRun,
    *,
    method: str,
    seed: int,
    start: StartingPoint,
    options: dict[str, Any],
    method_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage 2 of ``method``: from the starting point, the setting's schedule, the world's mix."""
    s = run.settings
    world = run.world_dir.resolve()
    return {
        "model": run.preset,
        "model_options": options,
        "method": method,
        "method_options": dict(method_options or {}),
        "stage": 2,
        "init_from": str(start.path.resolve()),
        "output_dir": str(run.stage2_dir(seed, method)),
        "resume": True,
        "data": {
            "train": str(world / "train.json"),
            "image_folder": str(world),
            "group_by_modality_length": s.group_by_modality_length,
        },
        "train": {
            **train_loop(
                s,
                steps=s.stage2_steps,
                batch_size=s.stage2_batch_size,
                lr=s.stage2_lr,
                seed=seed,
                progress=run.progress,
            ),
            "precision": s.train_precision(),
        },
    }


def stage2_model(run: DemoRun, seed: int, method: str) -> Any:
    """The trained stage-2 model, on the GPU when there is one (the suite runs where training ran)."""
    model = build_model(str(run.stage2_dir(seed, method)))
    return model.to("cuda") if torch.cuda.is_available() else model


def evaluate_stage(
    run: DemoRun,
    seed: int,
    method: str,
    items: dict[str, list[dict]],
    log: StageLog,
    *,
    shuffled: bool = False,
    load_model: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Score one stage-2 model on the suite unless its ``results.json`` is already there.

    ``shuffled``: the blind control (:func:`covft.eval.generate.shuffle_images`, seed 0): every
    scoring unit gets another unit's images, so the drop from the real score measures how much the
    model's answers rest on the image. ``load_model``: returns the stage-2 model, called only when
    there is something to generate (callers evaluating twice pass a cached loader).
    """
    out = run.eval_dir(seed, method, shuffled)
    name = f"eval{'-shuffled' if shuffled else ''}/seed{seed}/{method}"
    started = clock()
    if (out / RESULTS_FILE).is_file():
        log.record(name, "reused", started)
        return json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    model = load_model() if load_model is not None else stage2_model(run, seed, method)
    settings: dict[str, Any] = {"checkpoint": str(run.stage2_dir(seed, method)), "seed": seed}
    if shuffled:
        items = shuffle_images(items, seed=0)
        settings["shuffle_images"] = 0
    results = evaluate(
        model,
        items,
        out,
        run_name=method,
        batch_size=run.settings.eval_batch_size,
        max_new_tokens=run.settings.max_new_tokens,
        progress=run.progress,
        settings=settings,
    )
    log.record(name, "ran", started)
    return results


def stage2_and_eval(
    run: DemoRun,
    seed: int,
    method: str,
    start: StartingPoint,
    threads: int | None = None,
    context: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Stage 2 of one method from the starting point, then its suite scores.

    Returns ``{"real": scores, "shuffled": scores}``: the suite as it is and the blind control
    with the images shuffled (:func:`evaluate_stage`). Runs in the demo's process or in a worker
    process (``jobs > 1``); ``threads`` sets the worker's torch threads. ``context``: the
    instruction vectors of :func:`~covft.recipes.demo.context.context_vectors`, for the methods that route on them.
    ``full`` and ``covft`` record their vision gradients (:data:`~covft.recipes.demo.layout.GRADIENTS_FILE`, supp. Fig. A).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    log = StageLog(run.out)
    output = run.stage2_dir(seed, method)
    method_options = (
        {"context_vectors": str(context)} if context is not None and routes_on_text(method) else {}
    )
    config = _train_config(
        run,
        method=method,
        seed=seed,
        start=start,
        options=start.model_options(run.settings),
        method_options=method_options,
    )
    callbacks = [GradientFile(output / GRADIENTS_FILE)] if method in GRADIENT_METHODS else []
    train_stage(f"stage2/seed{seed}/{method}", config, log, callbacks)
    items = collect_items("all", suite=run.world_dir / "suite")
    load_model = functools.cache(lambda: stage2_model(run, seed, method))
    scores: dict[str, dict[str, float]] = {}
    for kind in ("real", "shuffled"):
        results = evaluate_stage(
            run, seed, method, items, log, shuffled=kind == "shuffled", load_model=load_model
        )
        scores[kind] = {name: float(entry["score"]) for name, entry in results["scores"].items()}
    return scores


def stage2_all(
    run: DemoRun, seeds: int, start: StartingPoint, context: Path | None
) -> dict[int, dict[str, dict[str, dict[str, float]]]]:
    """Every method's stage 2 + evaluation for seeds ``0 .. seeds - 1``, ``run.jobs`` at a time:
    ``{seed: {method: {"real": scores, "shuffled": scores}}}``.

    Methods and seeds are independent once stage 1 is done, so on a 2-core machine two
    single-threaded workers keep both cores busy with less threading overhead than one
    two-threaded process; one pool serves every seed (the costliest jobs first), so no worker
    waits for a seed's last method before the next seed starts.
    """
    jobs = min(run.jobs, len(run.methods) * seeds)
    order = [(seed, m) for m in longest_first(run.methods) for seed in range(seeds)]
    if jobs <= 1:
        done = {job: stage2_and_eval(run, job[0], job[1], start, context=context) for job in order}
    else:
        threads = max(1, torch.get_num_threads() // jobs)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn) as pool:
            futures = {job: pool.submit(stage2_and_eval, run, *job, start, threads, context) for job in order}
            done = {job: future.result() for job, future in futures.items()}
    return {seed: {m: done[(seed, m)] for m in run.methods} for seed in range(seeds)}


STAGE2_SECONDS = {"freeze": 226, "lora": 269, "full": 280, "covft": 414}
"""Stage 2 of each method in the full demo, seed 0 (docs/demo.md): only their order is used."""


def longest_first(methods: list[str]) -> list[str]:
    """``methods`` in the order the worker pool should start them: the costliest first.

    Workers take jobs in submission order, so starting the longest first lets the others fill in
    beside it and the workers finish closer together (in the full demo about a minute less per
    seed than the report's order, which starts CoVFT last). A method without a measured cost
    (a user's strategy) is assumed costliest. Results do not depend on the order: every job is
    its own process with its own seed and thread count.
    """
    unknown = max(STAGE2_SECONDS.values()) + 1
    return sorted(methods, key=lambda m: -STAGE2_SECONDS.get(m, unknown))


def routes_on_text(method: str) -> bool:
    """Whether ``method``'s strategy takes precomputed instruction vectors (``context_vectors``)."""
    return "context_vectors" in {f.name for f in fields(get_strategy(method).Options)}
