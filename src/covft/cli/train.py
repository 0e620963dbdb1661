"""``covft train CONFIG.yaml [key=value ...]``: run one stage of the recipe from a YAML config."""

from __future__ import annotations

import argparse
import os
import sys

from covft.train.config import load_config, packaged_config_names, valid_keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``covft train``'s arguments."""
    parser.add_argument(
        "config",
        nargs="?",
        help=f"YAML recipe: a path, or a shipped config name ({', '.join(packaged_config_names())})",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override config keys, e.g. train.lr=1e-4 model_options.vision_layers=2 resume=true",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list-keys", action="store_true", help="list every valid config key and exit")


def run(args: argparse.Namespace) -> int:
    """Load the config, apply overrides, train; returns the process exit status."""
    if args.list_keys:
        print("\n".join(valid_keys()))
        return 0
    if args.config is None:
        print(
            "covft train: give a config (a YAML path or a shipped name, e.g. stage2_covft)", file=sys.stderr
        )
        return 2
    config = load_config(args.config, args.overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    from covft.train.trainer import train

    result = train(config)  # a user's mistake ends in covft.cli with its one-line message
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, not per process
        metrics = ", ".join(f"{key}={value:.4g}" for key, value in result.metrics.items())
        print(f"covft train: done, {result.steps} steps, {metrics}; model saved to {result.output_dir}")
    return 0
