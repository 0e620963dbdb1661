"""The `covft` command line: a thin dispatcher.

Each sub-command lives next to the library code it drives, in a module that exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their command
runs, so `covft --help` stays fast and never imports heavy optional dependencies.

A user's mistake (:class:`covft.errors.UserError`: bad config, data, model path, missing optional
package; or an ``OSError``: missing file, read-only or full disk) ends the command with its
one-line message and exit status 1 (2 for a config error, like a usage error); ``--debug`` shows the traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from covft.errors import UserError

DEBUG_FLAG = "--debug"

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("covft.cli.train", "train a model (stage 1 or 2) from a YAML recipe with key=value overrides"),
    "eval": ("covft.cli.eval", "evaluate a checkpoint on the paper's 12 benchmarks (or the world's suite)"),
    "compare": ("covft.cli.compare", "put several evaluated runs side by side (table and bar chart)"),
    "downstream": (
        "covft.cli.downstream",
        "tune on one downstream set; report specialization/forgetting E, F, O",
    ),
    "world": (
        "covft.cli.world",
        "generate the synthetic conflict world (training mix and 12-benchmark suite)",
    ),
    "demo": ("covft.cli.demo", "end-to-end: world, stage 0/1/2 for several strategies, suite, report"),
    "analyze": ("covft.cli.analyze", "the paper's analyses: conflict, gradients, context"),
    "profile": ("covft.cli.profile", "training step time, latency and memory of strategies, side by side"),
    "export": (
        "covft.cli.export",
        "write a checkpoint as a stock Hugging Face model (LoRA/DoRA merged); optionally push it to the Hub",
    ),
    "methods": ("covft.cli.methods", "list the visual fine-tuning strategies and their options"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covft",
        description="Context-aware visual fine-tuning for LLaVA-style multimodal LLMs.",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(argv) and argv[0] == DEBUG_FLAG  # `covft --debug COMMAND ...`
    argv = argv[1:] if debug else argv
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"covft: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"covft {name}", description=help_text)
    module.add_arguments(sub)
    sub.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")
    args = sub.parse_args(rest)
    args.debug = args.debug or debug
    try:
        return int(module.run(args) or 0)
    except (UserError, OSError) as error:
        return _report(name, error, args.debug)
    except KeyboardInterrupt:
        print(f"covft {name}: interrupted", file=sys.stderr)
        return 130
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Destroy the torch.distributed process group a launched command started, while the
    interpreter is fully alive: left to interpreter shutdown, gloo's worker threads can abort the
    process after a finished run (SIGABRT, "terminate called without an active exception";
    pytorch/pytorch#190489), which a launcher reports as a failed run."""
    dist = sys.modules.get("torch.distributed")  # a command that never imported torch has none
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _report(command: str, error: BaseException, debug: bool) -> int:
    """Print a user error on one line (with its traceback under ``--debug``); the exit status."""
    if debug:
        traceback.print_exception(error)
    print(f"covft {command}: error: {error}", file=sys.stderr)
    if not debug:
        print(f"(run `covft {command} ... {DEBUG_FLAG}` for the traceback)", file=sys.stderr)
    return getattr(error, "exit_status", 1)
