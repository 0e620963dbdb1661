"""`covft methods`: list the strategies and their options with defaults."""

from __future__ import annotations

import argparse
import dataclasses


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", nargs="?", help="show only this method")


def run(args: argparse.Namespace) -> int:
    from covft.strategies import available_methods, get_strategy

    for name in [args.method] if args.method else available_methods():
        cls = get_strategy(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        module_doc = (__import__(cls.__module__, fromlist=["x"]).__doc__ or "").strip().splitlines()
        print(f"{name}: {(module_doc or doc or [''])[0]}")
        for field in dataclasses.fields(cls.Options):
            print(f"    {field.name} = {field.default!r}")
    return 0
