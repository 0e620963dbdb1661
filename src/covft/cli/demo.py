"""`covft demo`: the whole CoVFT pipeline end to end on the synthetic conflict world, on a CPU.

The shipped starting point (tower, LM, stage 1; ``--from-scratch`` retrains it) -> stage 2 for
each strategy and seed from it -> the world's held-out 12-benchmark suite, and again with the
images shuffled -> ``report.md``, ``results.json`` and plots. Every finished stage is reused by a
rerun. ``covft demo pretrain`` runs the starting point's recipe and writes the folder the package
ships. See docs/demo.md.

This module stays light (argument parsing only); the work is in :mod:`covft.recipes.demo.pipeline`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from covft.recipes.demo.settings import DEFAULT_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of `covft demo`."""
    parser.add_argument(
        "action",
        nargs="?",
        choices=("run", "pretrain"),
        default="run",
        help="run (default): the comparison; pretrain: train the method-agnostic starting point by the "
        "recipe (covft.recipes.demo.settings.PretrainSettings, about 40 minutes on two idle cores) and write it to --out "
        "(default: the folder the package ships, covft/recipes/demo/pretrained)",
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="train the starting point (tower, LM, stage 1) by the code's recipe instead of using the "
        "shipped one (cached under --cache-dir; about 40 minutes on two idle cores)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller world and schedule (a smoke run of every stage)"
    )
    parser.add_argument(
        "--scale",
        choices=("cpu", "gpu"),
        default="cpu",
        help="cpu (default): the comparison sized for two CPU cores; gpu: the same pipeline at GPU scale "
        "(covft.recipes.demo.settings.GPU: a 6.7x world, 20x the stage-2 samples, bf16 on CUDA; with "
        "--preset smol, SMOL_GPU: its own longer stage 1, 20x the smol setting's samples; planned for about "
        "7 and 12 minutes with one seed on one H200-class GPU; not with --quick; default --out "
        "runs/demo-gpu[-smol])",
    )
    parser.add_argument(
        "--preset",
        choices=("tiny", "smol"),
        default="tiny",
        help="tiny: small LM trained from scratch (fast); smol: SmolLM2-135M-Instruct (needs covft[smol])",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        metavar="METHOD",
        help=f"strategies to compare (any of `covft methods`; default: {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds 0..N-1; the report gives mean and spread, and the verdict uses it "
        "(default 2; 1 with --quick, a smoke run)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default runs/demo, or runs/demo-quick with --quick; -smol appended for smol; "
        "for pretrain: the shipped folder)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache of the tokenizer, stage-0 towers and converted LMs (default $COVFT_CACHE or runs/cache)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for stages 0 and 1, shared by the stage-2 jobs "
        "(default: all cores; results are reproducible for a given thread count; use 1 on a busy machine)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="stage-2 runs at a time, each in its own process (default: one per core, at most one per method)",
    )
    parser.add_argument(
        "--stage2-steps",
        type=int,
        default=None,
        help="override the stage-2 steps of the chosen setting, for every method alike (a longer "
        "comparison; use its own --out)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override fields of the chosen setting for every method alike, e.g. --set "
        "world_size=20000 stage2_steps=3000 pretrain.lm_steps=4000 pretrain.stage0.steps=3000 (fields: "
        "covft.recipes.demo.settings.DemoSettings and PretrainSettings; use its own --out; a changed recipe "
        "needs --from-scratch)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def apply_overrides(settings, pairs: list[str]):
    """``settings`` with ``KEY=VALUE`` overrides applied (values read as YAML and checked against the
    field's type; dotted keys reach nested settings, e.g. ``pretrain.stage0.steps=3000``)."""
    from covft.utils.config import override

    return override(settings, pairs)


def default_threads() -> int:
    """All cores. Not lowered when the machine is busy: float reductions depend on the thread count,
    so a load-dependent default made the same command give different mechanism numbers (at the
    seventh digit) from one run to the next. Pass ``--threads 1`` on a busy machine."""
    return os.cpu_count() or 1


def pretrain_command(args: argparse.Namespace, settings) -> int:
    """`covft demo pretrain`: run the recipe (cached, resumable) and export the starting point."""
    import shlex

    from covft.recipes.demo import pretrain
    from covft.recipes.demo.cache import default_cache_dir

    recipe = settings.pretrain
    if recipe.preset != "tiny":
        print("covft demo pretrain: only the tiny preset's starting point is shipped", file=sys.stderr)
        return 2
    out = args.out or pretrain.SHIPPED
    final, summary = pretrain.pretrain(
        recipe, cache_dir=args.cache_dir or default_cache_dir(), progress=not args.no_progress
    )
    overrides = [pair for pair in args.set if pair.startswith("pretrain.")]
    command = "covft demo pretrain" + "".join(f" --set {shlex.quote(pair)}" for pair in overrides)
    pretrain.export(final, out, recipe, command=command, summary=summary)
    print((out / pretrain.SUMS_FILE).read_text(encoding="utf-8"), end="")
    print(f"covft demo pretrain: wrote the starting point of recipe {recipe.key()} to {out}", file=sys.stderr)
    return 0


def count_error(args: argparse.Namespace) -> str | None:
    """The one-line error for a non-positive ``--threads``, ``--jobs`` or ``--seeds``; None if all fit."""
    for flag, value in (("--threads", args.threads), ("--jobs", args.jobs), ("--seeds", args.seeds)):
        if value is not None and value < 1:
            return f"{flag} must be >= 1, got {value}: pass a positive count, or leave it out (default)"
    return None


def run(args: argparse.Namespace) -> int:
    """Run the demo (or its pretraining); prints the table and where the report went."""
    error = count_error(args)
    if error is not None:  # before anything runs or is written
        print(f"covft demo: error: {error}", file=sys.stderr)
        return 2
    import torch

    from covft.recipes.demo.cache import default_cache_dir
    from covft.recipes.demo.pipeline import DemoError, DemoRun, run_demo
    from covft.recipes.demo.settings import settings_for

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    jobs = args.jobs or min(os.cpu_count() or 1, len(args.methods))
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    try:
        settings = settings_for(args.preset, args.quick, args.scale)
        if args.stage2_steps is not None:
            settings = replace(settings, stage2_steps=args.stage2_steps)
        settings = apply_overrides(settings, args.set)
    except ValueError as error:
        print(f"covft demo: error: {error}", file=sys.stderr)
        return 2
    if args.action == "pretrain":
        return pretrain_command(args, settings)
    out = args.out
    if out is None:
        out = Path("runs") / ("demo-quick" if args.quick else "demo-gpu" if args.scale == "gpu" else "demo")
        if args.preset != "tiny":
            out = out.with_name(f"{out.name}-{args.preset}")
    print(
        f"covft demo: {args.preset} preset, {threads} thread(s), {jobs} stage-2 job(s), writing {out}",
        file=sys.stderr,
    )
    demo = DemoRun(
        out=out,
        settings=settings,
        methods=list(args.methods),
        seeds=args.seeds if args.seeds is not None else (1 if args.quick else 2),
        cache_dir=args.cache_dir or default_cache_dir(),
        progress=not args.no_progress,
        jobs=jobs,
        from_scratch=args.from_scratch,
    )
    try:
        run_demo(demo)
    except (DemoError, ImportError) as error:
        print(f"covft demo: error: {error}", file=sys.stderr)
        return 2
    print(f"covft demo: wrote {out}/report.md, results.json and plots", file=sys.stderr)
    return 0
