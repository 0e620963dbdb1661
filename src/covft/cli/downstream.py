"""`covft downstream`: tune on one downstream set; report specialization/forgetting E, F, O.

Argument parsing only; the study is :func:`covft.recipes.downstream_study.run_downstream`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covft.recipes.downstream import DownstreamConfigError, load_config
from covft.recipes.downstream_report import CHART_FILE, RESULTS_FILE, TABLE_FILE, markdown
from covft.recipes.downstream_study import run_downstream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of `covft downstream`."""
    parser.add_argument("config", type=Path, help="YAML config (see `covft.recipes.downstream` for the keys)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=100 strategies=[lora,full]"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the study, print the table and every strategy's E, F, O; return the exit status."""
    try:
        config = load_config(args.config, args.overrides)
    except DownstreamConfigError as error:
        print(f"covft downstream: error: {error}", file=sys.stderr)
        return 2
    if args.no_progress:
        config.progress = False
    try:
        report = run_downstream(config)
    except (ValueError, FileNotFoundError, KeyError) as error:  # config, data and strategy errors
        print(f"covft downstream: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    print(markdown(report))
    for name, row in report["strategies"].items():
        print(f"{name}: E={row['E']:+.2f} F={row['F']:+.2f} O={row['O']:+.2f}")
    print(
        f"covft downstream: wrote {Path(config.output_dir) / RESULTS_FILE}, {TABLE_FILE}, {CHART_FILE}",
        file=sys.stderr,
    )
    return 0
