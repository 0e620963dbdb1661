"""``covft world make|preview``: generate the conflict world, or draw its contact sheet."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``covft world``."""
    parser.add_argument(
        "action",
        choices=("make", "preview"),
        help="make: write the training mix and the held-out suite; preview: draw a contact sheet",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="world directory (make), or a directory or .png path for the sheet (preview)",
    )
    parser.add_argument("--size", type=int, default=2000, help="training conversations (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--suite-size", type=int, default=100, help="scoring units per held-out benchmark (default 100)"
    )
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--per-family", type=int, default=2, help="preview: samples per family (default 2)")
    parser.add_argument("--force", action="store_true", help="make: regenerate even if meta.json matches")
    parser.add_argument("--quiet", action="store_true", help="make: no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; prints where the output went."""
    if args.action == "preview":
        from covft.recipes.world import WorldConfig
        from covft.recipes.world.preview import contact_sheet
        from covft.utils.config import ConfigError

        WorldConfig(image_size=args.image_size)  # the image sizes a world accepts, checked before drawing
        if args.per_family < 1:
            raise ConfigError(f"--per-family must be at least 1, got {args.per_family}")

        target = args.out if args.out.suffix == ".png" else args.out / "world_samples.png"
        path = contact_sheet(target, seed=args.seed, per_family=args.per_family, image_size=args.image_size)
        print(f"wrote {path}")
        return 0
    from covft.recipes.world import make_world

    start = time.perf_counter()
    meta = make_world(
        args.out,
        size=args.size,
        seed=args.seed,
        suite_size=args.suite_size,
        image_size=args.image_size,
        force=args.force,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "out": str(args.out),
                "n_train": meta["n_train"],
                "suite": meta["suite"],
                "seconds": round(seconds, 2),
            },
            indent=1,
        )
    )
    return 0
