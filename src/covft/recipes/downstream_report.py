"""The downstream study's outputs: ``downstream.json``, the Markdown table and the E-vs-F figure."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from covft.analysis.plots import plot_transfer
from covft.eval.report import format_score
from covft.utils import write_text_atomic

RESULTS_FILE = "downstream.json"
TABLE_FILE = "downstream.md"
CHART_FILE = "downstream.png"
CONFIG_FILE = "downstream_config.yaml"
"""The resolved configuration of the study (``covft downstream`` reads it back as a config)."""


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    text = format_score(value, 2)
    return f"+{text}" if value > 0 and not text.startswith("-") else text


def markdown(report: Mapping[str, Any]) -> str:
    """Per strategy: A_D, each A_u, E, F and O; the base model's accuracies first."""
    upstream = list(report["upstream"])
    header = [
        "model",
        "method",
        f"A_D ({report['downstream']})",
        *(f"A_{u}" for u in upstream),
        "E",
        "F",
        "O",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|",
    ]
    base = report["base"]
    cells = [format_score(base["A_D"]), *(format_score(base["A_u"][u]) for u in upstream), "–", "–", "–"]
    lines.append("| " + " | ".join(["base", "–", *cells]) + " |")
    for name, row in report["strategies"].items():
        cells = [format_score(row["A_D"]), *(format_score(row["A_u"][u]) for u in upstream)]
        cells += [_fmt(row["E"]), _fmt(row["F"]), _fmt(row["O"])]
        lines.append("| " + " | ".join([name, row["method"], *cells]) + " |")
    notes = (
        "\nE = A_D(tuned) - A_D(base); F = mean over upstream u of A_u(tuned) - A_u(base) "
        "(negative = forgetting); O = (E + F) / 2. Accuracies in percent, MME divided by 20.\n"
    )
    return "\n".join(lines) + "\n" + notes


def write_report(
    report: Mapping[str, Any], out_dir: str | os.PathLike[str], *, chart: bool = True
) -> dict[str, Path]:
    """Write ``downstream.json``, ``downstream.md`` and (``chart`` and a strategy) ``downstream.png``."""
    out = Path(out_dir)
    paths = {"json": out / RESULTS_FILE, "table": out / TABLE_FILE}
    write_text_atomic(paths["json"], json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(paths["table"], f"# Downstream tuning on {report['downstream']}\n\n{markdown(report)}")
    if chart and report["strategies"]:
        paths["chart"] = plot_transfer(dict(report), out / CHART_FILE)
    return paths
