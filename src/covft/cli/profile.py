"""`covft profile`: training step time, first-token latency, peak memory and FLOPs of strategies.

    covft profile --geometry tiny --methods freeze,full,covft --steps 5 --warmup 2 --out runs/profile
    covft profile --geometry llava-1.5-7b --methods freeze,full,covft   # one CUDA GPU, bf16
    covft profile --flops-7b                                            # analytic FLOPs at 7B, no model

Writes ``profile.json`` and ``profile.md`` (the layout of the paper's supp. Table E) to ``--out``
and prints the table.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from covft.profile import (
    ANALYTIC_METHODS,
    GEOMETRIES,
    ProfileSettings,
    analytic_flops,
    count_only,
    format_flops_markdown,
    format_markdown,
    llava_15_7b_geometry,
    profile,
    static_training_bytes,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `covft profile`."""
    parser.add_argument("--geometry", choices=GEOMETRIES, default="tiny")
    parser.add_argument(
        "--methods",
        default="freeze,full,covft",
        help="comma-separated strategies (must include full: ratios are against it)",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per strategy")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--inference-repeats", type=int, default=None, help="timed prefills (default: steps, at least 3)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="training batch (default: 4 tiny, 1 at 7B)"
    )
    parser.add_argument("--text-tokens", type=int, default=60, help="text tokens per training sample")
    parser.add_argument("--prompt-tokens", type=int, default=45, help="text tokens of the inference prompt")
    parser.add_argument(
        "--context-tokens", type=int, default=24, help="instruction tokens for the text encoder"
    )
    parser.add_argument("--llm-layers", type=int, default=None, help="LLM depth (default: 2 tiny, 32 at 7B)")
    parser.add_argument("--vision-layers", type=int, default=None, help="vision blocks (tiny geometry only)")
    parser.add_argument(
        "--freeze-llm", action="store_true", help="train_llm=False for every strategy (fits smaller GPUs)"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", default=None, help="default: cpu for tiny, cuda for llava-1.5-7b")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="thread: CPU time of the one thread (needs --threads 1; robust to other processes' load)",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip FlopCounterMode counts")
    parser.add_argument("--no-memory", action="store_true", help="skip the CPU memory processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/profile"), help="directory for JSON + markdown"
    )
    parser.add_argument(
        "--flops-only",
        action="store_true",
        help="only count FLOPs (FlopCounterMode + analytic), no timing or memory: e.g. the 7B vision "
        "geometry with --llm-layers 2 on a CPU",
    )
    parser.add_argument(
        "--flops-7b",
        action="store_true",
        help="only print the analytic FLOP ratios of the full LLaVA-1.5-7B (no model is built)",
    )


def analytic_7b_report(llm_layers: int | None = None, train_llm: bool = True) -> dict[str, Any]:
    """Analytic FLOPs of a training step and a prefill at the LLaVA-1.5-7B geometry, per method."""
    full_7b = llava_15_7b_geometry()
    geometry = replace(
        full_7b,
        llm_layers=llm_layers or full_7b.llm_layers,
        train_llm=train_llm,
    )
    train = {m: analytic_flops(geometry, m) for m in ANALYTIC_METHODS}
    memory = {m: _static_7b_bytes(m, geometry.llm_layers, train_llm) for m in ANALYTIC_METHODS}
    prefill = {m: analytic_flops(geometry, m, inference=True) for m in ANALYTIC_METHODS}
    return {
        "geometry": geometry.to_dict(),
        "train_step": train,
        "prefill": prefill,
        "train_ratio_vs_full": {m: train[m]["total"] / train["full"]["total"] for m in ANALYTIC_METHODS},
        "prefill_ratio_vs_full": {
            m: prefill[m]["total"] / prefill["full"]["total"] for m in ANALYTIC_METHODS
        },
        "static_training_bytes_bf16": memory,
        "static_memory_ratio_vs_full": {
            m: memory[m]["total"] / memory["full"]["total"] for m in ANALYTIC_METHODS
        },
    }


def _static_7b_bytes(method: str, llm_layers: int, train_llm: bool) -> dict[str, int]:
    """Weights + gradients + AdamW state of the 7B model in bf16, built on the meta device."""
    import torch

    from covft.models import build_model
    from covft.strategies import apply_vft

    model = build_model("llava-1.5-7b", device="meta", dtype=torch.bfloat16, llm_layers=llm_layers)
    apply_vft(model, method, train_llm=train_llm)
    model.to(torch.bfloat16)
    return static_training_bytes(model)


def format_analytic(report: dict[str, Any]) -> str:
    g = report["geometry"]
    lines = [
        f"Analytic FLOPs, LLaVA-1.5-7B geometry ({g['llm_layers']} LLM layers, train_llm={g['train_llm']}, "
        f"{g['llm_tokens']} tokens/sample, {g['comoe_blocks']} CoMoE blocks x {g['num_experts']} experts):",
        "| method | train step TFLOPs | vision part | train / Full FT | prefill TFLOPs | prefill / Full FT "
        "| weights+grads+AdamW (bf16) | / Full FT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in ANALYTIC_METHODS:
        t, p = report["train_step"][m], report["prefill"][m]
        memory = report["static_training_bytes_bf16"][m]["total"]
        lines.append(
            f"| {m} | {t['total'] / 1e12:.3f} | {t['vision'] / 1e12:.3f} | "
            f"{report['train_ratio_vs_full'][m]:.4f} | {p['total'] / 1e12:.3f} | "
            f"{report['prefill_ratio_vs_full'][m]:.4f} | {memory / 2**30:.2f} GiB | "
            f"{report['static_memory_ratio_vs_full'][m]:.4f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Measure, write ``profile.json`` + ``profile.md`` under ``--out``, print the table."""
    if args.flops_7b:
        report = analytic_7b_report(args.llm_layers, train_llm=not args.freeze_llm)
        print(format_analytic(report))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "flops_7b.json").write_text(json.dumps(report, indent=2))
        return 0
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    settings = ProfileSettings(
        geometry=args.geometry,
        methods=methods,
        steps=args.steps,
        warmup=args.warmup,
        inference_repeats=args.inference_repeats,
        batch_size=args.batch_size,
        text_tokens=args.text_tokens,
        prompt_tokens=args.prompt_tokens,
        context_tokens=args.context_tokens,
        llm_layers=args.llm_layers,
        vision_layers=args.vision_layers,
        train_llm=not args.freeze_llm,
        gradient_checkpointing=args.gradient_checkpointing,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        clock=args.clock,
        count_flops=not args.no_flops,
        memory=not args.no_memory,
        seed=args.seed,
    )
    if args.flops_only:
        report = count_only(settings)
        report["analytic_7b"] = analytic_7b_report(train_llm=settings.train_llm)
        markdown = format_flops_markdown(report) + "\n\n" + format_analytic(report["analytic_7b"])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "flops.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "flops.md").write_text(markdown + "\n")
        print(markdown)
        return 0
    report = profile(settings)
    # the full 7B geometry's FLOP ratio, the floor the measured step-time ratio is compared with
    report["analytic_7b"] = analytic_7b_report(train_llm=settings.train_llm)
    table = format_markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(report, indent=2, default=str))
    markdown = table + "\n\n" + format_analytic(report["analytic_7b"])
    (args.out / "profile.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\nwrote {args.out / 'profile.json'} and {args.out / 'profile.md'}")
    return 0
