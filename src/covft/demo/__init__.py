"""`covft demo`: the whole CoVFT pipeline end to end on the synthetic conflict world, on a CPU.

World -> stage 0 (contrastive tower) -> stage 1 (projector) -> stage 2 for each strategy from the
same stage-1 checkpoint -> the world's held-out 12-benchmark suite -> ``report.md``,
``results.json`` and plots. Every finished stage is reused by a rerun. See docs/demo.md.

This module stays light (argument parsing only); the work is in :mod:`covft.demo.pipeline`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from covft.demo.settings import DEFAULT_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of `covft demo`."""
    parser.add_argument(
        "--quick", action="store_true", help="smaller world and schedule (a smoke run of every stage)"
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
        "--seeds", type=int, default=1, help="seeds 0..N-1; the report gives mean and spread (default 1)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default runs/demo, or runs/demo-quick with --quick; -smol appended for smol)",
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
        "(default: all cores, or 1 when the machine is already busy)",
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
        "world_size=20000 stage2_steps=3000 (fields: covft.demo.settings.DemoSettings; use its own --out)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def apply_overrides(settings, pairs: list[str]):
    """``settings`` with ``KEY=VALUE`` overrides applied (values parsed as the field's type)."""
    from dataclasses import fields

    types = {f.name: f.type for f in fields(settings)}
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}")
        if key not in types:
            import difflib

            close = difflib.get_close_matches(key, types, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"--set: the demo settings have no field {key!r}{hint}")
        kind = str(types[key])
        if kind.startswith("bool"):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {key}: expected true or false, got {value!r}")
            changes[key] = value.lower() in ("true", "1")
        elif kind.startswith("int"):
            changes[key] = None if value.lower() == "none" and "None" in kind else int(value)
        elif kind.startswith("float"):
            changes[key] = float(value)
        elif kind.startswith("str"):
            changes[key] = value
        else:
            raise ValueError(f"--set cannot override {key!r} (type {kind}); edit covft.demo.settings instead")
    return replace(settings, **changes)


def default_threads() -> int:
    """All cores, unless other processes already keep them busy (oversubscribed threads crawl)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load >= cores else cores


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints the table and where the report went."""
    import torch

    from covft.demo.pipeline import DemoError, DemoRun, run_demo
    from covft.demo.settings import settings_for
    from covft.models.demo_presets import default_cache_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    jobs = args.jobs or min(os.cpu_count() or 1, len(args.methods))
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    out = args.out
    if out is None:
        out = Path("runs") / ("demo-quick" if args.quick else "demo")
        if args.preset != "tiny":
            out = out.with_name(f"{out.name}-{args.preset}")
    print(
        f"covft demo: {args.preset} preset, {threads} thread(s), {jobs} stage-2 job(s), writing {out}",
        file=sys.stderr,
    )
    settings = settings_for(args.preset, args.quick)
    if args.stage2_steps is not None:
        settings = replace(settings, stage2_steps=args.stage2_steps)
    try:
        settings = apply_overrides(settings, args.set)
    except ValueError as error:
        print(f"covft demo: error: {error}", file=sys.stderr)
        return 2
    demo = DemoRun(
        out=out,
        settings=settings,
        preset=args.preset,
        methods=list(args.methods),
        seeds=args.seeds,
        cache_dir=args.cache_dir or default_cache_dir(),
        progress=not args.no_progress,
        jobs=jobs,
    )
    try:
        run_demo(demo)
    except (DemoError, ImportError) as error:
        print(f"covft demo: error: {error}", file=sys.stderr)
        return 2
    print(f"covft demo: wrote {out}/report.md, results.json and plots", file=sys.stderr)
    return 0
