"""`covft eval`: evaluate a checkpoint on the paper's 12 benchmarks (or a suite directory).

Thin: parses, builds the model with ``covft.build_model`` and calls
:func:`covft.eval.generate.evaluate`, which writes ``results.json``,
``predictions/<benchmark>.jsonl`` and ``results.md``. A rerun into the same ``--out`` continues
from the cached predictions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covft.eval.generate import DEFAULT_MAX_NEW_TOKENS
from covft.eval.protocol import FILE_PROTOCOLS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of `covft eval`."""
    parser.add_argument(
        "checkpoint", help="a covft checkpoint directory, a local Hugging Face LLaVA directory or a preset"
    )
    parser.add_argument(
        "--benchmarks",
        default="all",
        help="'all' or a comma-separated list of names (mme, mmbench_en, ..., cvbench_omni3d)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data-root",
        type=Path,
        help="folder holding each benchmark's official files, e.g. LLaVA's playground/data/eval (docs/benchmarks.md)",
    )
    source.add_argument(
        "--suite", type=Path, help="a suite directory written by write_suite (e.g. data/world/suite)"
    )
    parser.add_argument(
        "--protocol",
        choices=FILE_PROTOCOLS,
        default=None,
        help="with --data-root: how prompts and router text are built: llava15 (default, the paper's: "
        "as the CoVFT release's scripts) or lmms-eval (lmms-eval's prompts, router reads the whole prompt); "
        "a suite's items bring their own. Recorded in eval_settings.json",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory of this run")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most N units per benchmark")
    parser.add_argument("--batch-size", type=int, default=8, help="generation batch size (default 8)")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"generation length cap (default {DEFAULT_MAX_NEW_TOKENS}, LLaVA-1.5's)",
    )
    parser.add_argument(
        "--name", default=None, help="run name in the report (default: the checkpoint's name)"
    )
    parser.add_argument(
        "--shuffle-images",
        type=int,
        default=None,
        metavar="SEED",
        help="blind control: give every scoring unit another unit's images (same benchmark, "
        "permutation seeded by SEED); the drop from the real score is how much answers rest on the image",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default cpu)")
    parser.add_argument(
        "--overwrite", action="store_true", help="discard cached predictions in --out and start afresh"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the paper-layout table, return the exit status."""
    import torch

    from covft.eval.generate import REPORT_FILE, collect_items, evaluate, shuffle_images

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():  # before any loading
        reason = f"CUDA is not available here (torch {torch.__version__})"
        print(f"covft eval: error: --device {args.device}, but {reason}; use --device cpu", file=sys.stderr)
        return 2
    for flag, value in (("--batch-size", args.batch_size), ("--max-new-tokens", args.max_new_tokens)):
        if value < 1:  # before the model is built or anything is written
            print(
                f"covft eval: error: {flag} must be >= 1, got {value}; pass a positive number",
                file=sys.stderr,
            )
            return 2
    try:
        items = collect_items(
            args.benchmarks,
            data_root=args.data_root,
            suite=args.suite,
            limit=args.limit,
            protocol=args.protocol,
        )
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"covft eval: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    if args.shuffle_images is not None:
        items = shuffle_images(items, args.shuffle_images)
    from covft.strategies import build_model

    model = build_model(str(args.checkpoint))
    if args.device != "cpu":
        model.to(args.device)
    name = args.name or Path(str(args.checkpoint)).name
    settings = {
        "checkpoint": str(args.checkpoint),
        "source": str(args.suite or args.data_root),
        "limit": args.limit,
    }
    if args.shuffle_images is not None:
        settings["shuffle_images"] = args.shuffle_images
    try:
        evaluate(
            model,
            items,
            args.out,
            run_name=name,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            progress=not args.no_progress,
            settings=settings,
            overwrite=args.overwrite,
        )
    except ValueError as error:
        print(f"covft eval: error: {error}", file=sys.stderr)
        return 2
    print((args.out / REPORT_FILE).read_text(encoding="utf-8"))
    print(f"covft eval: wrote {args.out}/results.json, results.md and predictions/", file=sys.stderr)
    return 0
