"""`covft compare`: several evaluated runs side by side (the paper's table and a G/K/V/Avg bar chart).

Each run directory is one written by `covft eval` (or :func:`covft.eval.generate.evaluate`); its
``results.json`` provides the scores.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from covft.errors import UserError

TABLE_FILE = "comparison.md"
CHART_FILE = "comparison.png"


def compare_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write ``comparison.md`` and ``comparison.png`` for ``run_dirs`` into ``out_dir``.

    Rows are named by ``names``, else by each run's recorded name (the directory name when two
    runs share one). MME is averaged over each run's recorded subtasks (10 when its
    ``results.json`` predates that record). Returns the paths written.
    """
    from covft.eval.generate import load_results, mme_subtasks_of, scores_of
    from covft.eval.report import bar_chart, markdown_table

    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    if names is not None and len(names) != len(run_dirs):
        raise ValueError(f"{len(names)} names for {len(run_dirs)} runs")
    loaded = [load_results(run) for run in run_dirs]
    labels = (
        list(names)
        if names is not None
        else [str(r.get("run") or Path(d).name) for r, d in zip(loaded, run_dirs, strict=True)]
    )
    if len(set(labels)) != len(labels):
        labels = [f"{label} ({Path(d).name})" for label, d in zip(labels, run_dirs, strict=True)]
    if len(set(labels)) != len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    rows = {label: scores_of(results) for label, results in zip(labels, loaded, strict=True)}
    subtasks = {label: mme_subtasks_of(results) for label, results in zip(labels, loaded, strict=True)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = out / TABLE_FILE
    sources = "\n".join(f"- {label}: `{d}`" for label, d in zip(labels, run_dirs, strict=True))
    table.write_text(
        f"# Comparison\n\n{markdown_table(rows, subtasks)}\nRuns:\n{sources}\n", encoding="utf-8"
    )
    chart = bar_chart(rows, out / CHART_FILE, subtasks)
    return {"table": table, "chart": chart}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of `covft compare`."""
    parser.add_argument("runs", nargs="+", type=Path, help="run directories written by `covft eval`")
    parser.add_argument(
        "--out", type=Path, default=Path("comparison"), help="output directory (default ./comparison)"
    )
    parser.add_argument("--names", default=None, help="comma-separated row names, one per run")


def run(args: argparse.Namespace) -> int:
    """Write the comparison, print the table, return the exit status."""
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    try:
        paths = compare_runs(args.runs, args.out, names)
    except UserError:
        raise  # covft's one-line report (the traceback under --debug)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"covft compare: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    print(paths["table"].read_text(encoding="utf-8"))
    print(f"covft compare: wrote {paths['table']} and {paths['chart']}", file=sys.stderr)
    return 0
