"""The Markdown tables of `covft profile`: the layout of the paper's supp. Table E, and FLOPs only."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_flops_markdown", "format_markdown"]


def format_flops_markdown(report: dict[str, Any]) -> str:
    """Counted (and, where modelled, analytic) FLOPs of a training step and a prefill, per method."""
    s = report["settings"]
    lines = [
        f"FLOPs counted with FlopCounterMode, geometry `{s['geometry']}` ({s['device']}, {s['dtype']}, batch "
        f"{s['batch_size']}, LLM layers {s['llm_layers']}, train_llm={s['train_llm']}); {report['date_utc']}",
        "",
        "| method | train step TFLOPs (counted) | analytic | train / Full FT | prefill TFLOPs | prefill / Full FT |",
        "|---|---|---|---|---|---|",
    ]
    for method, entry in report["methods"].items():
        f, r = entry["flops"], entry["ratios_vs_full"]
        analytic = f.get("analytic_train_step")
        lines.append(
            f"| {method} | {f['train_step'] / 1e12:.4f} | "
            f"{'-' if analytic is None else f'{analytic / 1e12:.4f}'} | {r['train_flops']:.4f} | "
            f"{f['prefill'] / 1e12:.4f} | {r['prefill_flops']:.4f} |"
        )
    return "\n".join(lines)


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_markdown(report: dict[str, Any]) -> str:
    """The Table E layout: method | train step | inference/sample | peak memory | ratios vs Full FT."""
    s = report["settings"]
    lines = [
        f"Geometry `{s['geometry']}` ({s['device']}, {s['dtype']}, batch {s['batch_size']}, "
        f"LLM layers {s['llm_layers']}, train_llm={s['train_llm']}, {s['clock']} clock); {report['machine']}; "
        f"{report['date_utc']}",
        "",
        "| method | train step | inference / sample (bs 1) | peak memory | train step / Full FT "
        "| inference / Full FT | memory / Full FT | train FLOPs / Full FT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, entry in report["methods"].items():
        train, infer = entry["train_step_s"], entry["inference_s"]
        memory = entry.get("memory", {}).get("peak_bytes")
        ratios = entry["ratios_vs_full"]
        per_round = ratios["train_step_per_round"]
        train_ratio = _fmt_ratio(ratios["train_step"])
        if method != "full":
            train_ratio += f" ({_fmt_ratio(per_round['min'])}-{_fmt_ratio(per_round['max'])})"
        lines.append(
            f"| {method} | {_fmt_time(train['median'])} ({_fmt_time(train['min'])}-{_fmt_time(train['max'])}) "
            f"| {_fmt_time(infer['median'])} | "
            f"{'-' if memory is None else f'{memory / 2**20:,.0f} MiB'} | {train_ratio} | "
            f"{_fmt_ratio(ratios['inference'])} | {_fmt_ratio(ratios['peak_memory'])} | "
            f"{_fmt_ratio(ratios['train_flops'])} |"
        )
    lines.append("")
    lines.append(
        "Times: median (min-max) of the timed steps; step ratio: median ratio (min-max of the per-round "
        "ratios, rounds interleave the strategies). Memory: "
        + next(iter(report["methods"].values())).get("memory", {}).get("kind", "not measured")
        + "."
    )
    return "\n".join(lines)
