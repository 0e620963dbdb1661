"""``covft analyze conflict|gradients|context``: the paper's analyses from the command line.

Each command writes a JSON file and PNG figures into ``--out`` and prints a short summary. The
drivers behind them are :mod:`covft.recipes.analyses`, the maths :mod:`covft.analysis`
(see docs/analysis.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
The paper's analyses.

  conflict   two runs from the same start on the same images, differing only in the task query
             (grounding vs captioning by default); per-block parameter and feature distance between
             the two vision encoders over training, full fine-tuning vs CoVFT (paper Fig. 1b/c)
  gradients  cosine of each step's vision gradient with the dominant gradient direction, per
             strategy (paper supp. Fig. A)
  context    context vectors of a trained CoVFT checkpoint: k-means, PCA, nearest samples per
             centroid, and routing-vs-context correlation (paper Fig. 3, supp. Fig. B)

Training runs use covft's recipe (covft.train.train): --config names a YAML recipe (default: the
schema defaults, i.e. the tiny-test model) and --set KEY=VALUE overrides any key of it, e.g.
--set model_options.vision_layers=4 --set init_from=runs/stage1 (the stage-1 output
of the same model).
"""


def _training_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    group = parser.add_argument_group("training (same for every strategy and run)")
    group.add_argument(
        "--config", default=None, help="YAML recipe (path or packaged name); default: schema defaults"
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key (repeatable), e.g. model_options.vision_layers=4",
    )
    group.add_argument(
        "--strategies",
        default="full,covft",
        help="comma-separated strategies to compare (default: full,covft)",
    )
    group.add_argument("--steps", type=int, default=steps, help=f"optimizer steps per run (default {steps})")
    group.add_argument(
        "--batch-size", type=int, default=None, help="per-device batch size (default: recipe's)"
    )
    group.add_argument(
        "--lr", type=float, default=None, help="learning rate for every part (default: recipe's)"
    )
    group.add_argument("--seed", type=int, default=None, help="seed of every run (default: recipe's)")
    group.add_argument(
        "--keep-runs", action="store_true", help="keep the trained models under OUT/analysis_runs"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``conflict``, ``gradients`` and ``context`` sub-commands."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)

    _add_conflict(sub)
    _add_gradients(sub)
    _add_context(sub)


def _add_conflict(sub: Any) -> None:
    conflict = sub.add_parser(
        "conflict",
        help="visual preference conflict: encoder distance between two task-specific runs",
        description="Train two models from the same start on the same images with different task queries "
        "(default grounding vs captioning) and log the per-block L2 distance between their vision encoders "
        "(parameters, and features on a fixed probe set) over training, for each strategy. Writes "
        "conflict.json, conflict_depth.png and conflict_steps.png. Parameter distances of CoMoE blocks run "
        "over all of the block's parameters (experts, router, CVE, norms); feature distances compare what "
        "blocks compute and are comparable across strategies.",
    )
    conflict.add_argument(
        "--data", help="LLaVA-format JSON/JSONL to split by task family (e.g. world/train.json)"
    )
    conflict.add_argument(
        "--captions",
        default="auto",
        help="captions file for the same images (auto: captions.json next to --data if present; none: off)",
    )
    conflict.add_argument("--task-a", default="grounding", choices=("grounding", "region", "caption"))
    conflict.add_argument("--task-b", default="caption", choices=("grounding", "region", "caption"))
    conflict.add_argument(
        "--data-a", help="run A's data, instead of splitting --data (same images as --data-b)"
    )
    conflict.add_argument("--data-b", help="run B's data")
    conflict.add_argument(
        "--image-folder", help="folder of relative image paths (default: the data file's folder)"
    )
    conflict.add_argument("--max-samples", type=int, default=0, help="use at most this many images (0: all)")
    conflict.add_argument(
        "--every", type=int, default=10, help="measure every N steps (plus step 0 and the last)"
    )
    conflict.add_argument("--probe-size", type=int, default=8, help="probe images for feature distances")
    conflict.add_argument(
        "--keep-snapshots", action="store_true", help="keep run A's snapshots under OUT/conflict_snapshots"
    )
    conflict.add_argument("--out", required=True, help="output folder")
    _training_arguments(conflict, steps=100)


def _add_gradients(sub: Any) -> None:
    gradients = sub.add_parser(
        "gradients",
        help="gradient conflict: cosine of step gradients with the dominant direction",
        description="Train each strategy on the same data and schedule, record every step's vision gradient "
        "(all trainable vision parameters, flattened) and report its cosine with the dominant direction: the "
        "first principal component of the stacked gradients, sign-aligned with their mean. Writes "
        "gradients.json, gradients_hist.png and gradients_steps.png, with the paper's values for reference.",
    )
    gradients.add_argument("--data", required=True, help="LLaVA-format JSON/JSONL training data")
    gradients.add_argument(
        "--image-folder", help="folder of relative image paths (default: the data file's folder)"
    )
    gradients.add_argument(
        "--projection",
        default="auto",
        choices=("auto", "none", "gaussian", "countsketch"),
        help="none: exact gradients; gaussian/countsketch: seeded random projection to --sketch-dim; "
        "auto: exact if steps x parameters fit in --max-exact-mb, else countsketch",
    )
    gradients.add_argument("--sketch-dim", type=int, default=4096, help="dimensions of the projection")
    gradients.add_argument(
        "--max-exact-mb", type=float, default=2048.0, help="memory budget for exact gradients"
    )
    gradients.add_argument(
        "--center", action="store_true", help="centre gradients before PCA (default: uncentred)"
    )
    gradients.add_argument("--out", required=True, help="output folder")
    _training_arguments(gradients, steps=50)


def _add_context(sub: Any) -> None:
    context = sub.add_parser(
        "context",
        help="context vectors: clusters, nearest samples, routing correlation",
        description="Collect the CoMoE router inputs (context vectors) of a trained CoVFT checkpoint for N "
        "samples, cluster them with k-means, project with PCA, list the samples nearest to each centroid "
        "(JSON, Markdown, contact sheet) and correlate pairwise context similarity with pairwise routing "
        "similarity. Writes context.json, context_clusters.md, context_vectors.npz, context_clusters.png, "
        "context_nearest.png and routing_vs_context.png.",
    )
    context.add_argument(
        "--checkpoint", required=True, help="trained CoVFT model (covft checkpoint directory)"
    )
    context.add_argument(
        "--data", required=True, help="LLaVA-format JSON/JSONL (samples with one image are used)"
    )
    context.add_argument(
        "--image-folder", help="folder of relative image paths (default: the data file's folder)"
    )
    context.add_argument("--num-samples", type=int, default=5000, help="samples drawn (0: all; default 5000)")
    context.add_argument("--clusters", type=int, default=10, help="k of k-means (default 10)")
    context.add_argument(
        "--block",
        default="last",
        help="last (the last CoMoE block: the one feeding the LLM, as in the paper), mean (average over "
        "CoMoE blocks) or a block index",
    )
    context.add_argument("--nearest", type=int, default=4, help="samples listed per centroid (default 4)")
    context.add_argument("--batch-size", type=int, default=16)
    context.add_argument("--seed", type=int, default=0, help="seed of the sample draw, k-means and PCA")
    context.add_argument("--text-encoder", default=None, help="override the checkpoint's text encoder")
    context.add_argument("--out", required=True, help="output folder")


def _strategies(text: str) -> list[str]:
    from covft.utils.config import ConfigError

    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ConfigError("--strategies is empty: name at least one strategy, e.g. --strategies full,covft")
    return names


def _image_folder(args: argparse.Namespace, data: str) -> str:
    return args.image_folder or str(Path(data).parent)


def _run_conflict(args: argparse.Namespace) -> int:
    from covft.recipes.analyses.conflict import conflict_samples, run_conflict, write_conflict
    from covft.utils.config import ConfigError

    try:
        samples_a, samples_b, tasks = conflict_samples(data=args.data, data_a=args.data_a, data_b=args.data_b,
                                                       captions=args.captions, task_a=args.task_a,
                                                       task_b=args.task_b)  # fmt: skip
    except ValueError as error:
        raise ConfigError(str(error)) from error
    if args.max_samples > 0:
        samples_a, samples_b = samples_a[: args.max_samples], samples_b[: args.max_samples]
    out = Path(args.out)
    result = run_conflict(
        samples_a,
        samples_b,
        out,
        image_folder=_image_folder(args, args.data_a or args.data),
        strategies=_strategies(args.strategies),
        steps=args.steps,
        every=args.every,
        probe_size=args.probe_size,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        config=args.config,
        overrides=args.overrides,
        tasks=tasks,
        keep_runs=args.keep_runs,
        keep_snapshots=args.keep_snapshots,
    )
    write_conflict(result, out)
    print(f"conflict: {tasks[0]} vs {tasks[1]}, {result['n_samples']} images, {args.steps} steps")
    for strategy, data in result["strategies"].items():
        final = data["final"]
        print(
            f"  {strategy:>8}: parameter distance / block norm by depth "
            f"{[round(v, 4) for v in final['param_relative']]}; feature distance "
            f"{[round(v, 4) for v in final['feature_l2']]}; outside the blocks {data['outside_l2'][-1]:.4f}"
        )
    print(f"wrote {out / 'conflict.json'}, conflict_depth.png, conflict_steps.png")
    return 0


def _run_gradients(args: argparse.Namespace) -> int:
    from covft.recipes.analyses.gradients import run_gradients, write_gradients

    out = Path(args.out)
    result = run_gradients(
        out,
        data=args.data,
        image_folder=_image_folder(args, args.data),
        strategies=_strategies(args.strategies),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        config=args.config,
        overrides=args.overrides,
        projection=args.projection,
        sketch_dim=args.sketch_dim,
        max_exact_mb=args.max_exact_mb,
        center=args.center,
        keep_runs=args.keep_runs,
    )
    write_gradients(result, out)
    paper = result["paper"]
    print(f"gradient cosine to the dominant direction ({args.steps} steps)")
    print(
        f"  {'strategy':>8} | {'ours mean':>9} {'ours std':>8} | {'paper mean':>10} {'paper std':>9}  (paper: 7B, 665K)"
    )
    for strategy, data in result["strategies"].items():
        ref = paper.get(strategy)
        ref_text = f"{ref['mean']:>10.3f} {ref['std']:>9.3f}" if ref else f"{'-':>10} {'-':>9}"
        print(f"  {strategy:>8} | {data['mean']:>9.3f} {data['std']:>8.3f} | {ref_text}")
    print(f"wrote {out / 'gradients.json'}, gradients_hist.png, gradients_steps.png")
    return 0


def _run_context(args: argparse.Namespace) -> int:
    from covft.recipes.analyses.context import run_context
    from covft.utils.config import ConfigError

    block: str | int = args.block
    if block not in ("last", "mean"):
        try:
            block = int(block)
        except ValueError as error:
            raise ConfigError(f"--block must be last, mean or a block index, got {block!r}") from error
    for flag, value, least in (
        ("--clusters", args.clusters, 1),
        ("--nearest", args.nearest, 1),
        ("--batch-size", args.batch_size, 1),
        ("--num-samples", args.num_samples, 0),
    ):
        if value < least:
            raise ConfigError(f"{flag} must be >= {least}, got {value}")
    out = Path(args.out)
    result = run_context(
        args.checkpoint,
        args.data,
        out,
        image_folder=_image_folder(args, args.data),
        num_samples=args.num_samples,
        clusters=args.clusters,
        block=block,
        nearest=args.nearest,
        batch_size=args.batch_size,
        seed=args.seed,
        text_encoder=args.text_encoder,
    )
    correlation = result["routing_correlation"]
    print(
        f"context: {result['num_samples']} samples, block {result['block']}, "
        f"{len(result['clusters'])} clusters (sizes {[c['size'] for c in result['clusters']]})"
    )
    print(
        f"  routing vs context: Pearson r = {correlation['pearson_r']:.3f} over {correlation['pairs']} pairs "
        f"(paper, LLaVA-1.5-7B: {correlation['paper_r']})"
    )
    print(f"wrote {out / 'context.json'}, context_clusters.md, and the figures")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen analysis; returns the exit status."""
    handlers = {"conflict": _run_conflict, "gradients": _run_gradients, "context": _run_context}
    return handlers[args.analysis](args)
