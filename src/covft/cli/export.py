"""`covft export CKPT OUT`: a covft checkpoint as a stock Hugging Face directory, optionally uploaded."""

from __future__ import annotations

import argparse

from covft.errors import UserError

DESCRIPTION = """\
Write a covft checkpoint as a Hugging Face directory (config.json, model.safetensors, tokenizer
and processor files, a model card) that transformers.AutoModelForImageTextToText.from_pretrained
loads and that gives covft's logits.

  freeze, full, bitfit, selective   a stock directory, loads without covft
  lora, dora                        the same, adapters merged into the weights first (PEFT merge_and_unload)
  covft, vpt, qavit, qmoe           they add modules stock transformers has none of: a directory that
                                    loads with covft installed, from_pretrained(OUT, trust_remote_code=True)
                                    (--stock-only refuses them instead)

OUT must not exist or be empty (--overwrite replaces an earlier export). With --push-to-hub REPO
the directory is then uploaded to the Hugging Face Hub (log in first: `hf auth login` or HF_TOKEN).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the arguments of `covft export`."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="a covft checkpoint directory: a finished run's output_dir or one written by save_pretrained",
    )
    parser.add_argument("out", metavar="OUT", help="the directory to write the Hugging Face model to")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT when it holds an earlier export"
    )
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO",
        default=None,
        help="then upload OUT to this Hub model repository (user/name; created if missing)",
    )
    parser.add_argument(
        "--private", action="store_true", help="with --push-to-hub: create the repository private"
    )
    parser.add_argument(
        "--stock-only",
        action="store_true",
        help="refuse strategies that cannot be loaded without covft (for serving stacks that only know stock classes)",
    )
    parser.add_argument("--no-progress", action="store_true", help="print only the summary")


def run(args: argparse.Namespace) -> int:
    """Export (and upload); print what was written."""
    from covft.export import check_hub_access, export_checkpoint, push_to_hub

    if args.private and not args.push_to_hub:
        raise UserError("--private only applies with --push-to-hub REPO")
    if args.push_to_hub:
        check_hub_access()  # before minutes of loading and writing
    summary = export_checkpoint(
        args.checkpoint,
        args.out,
        overwrite=args.overwrite,
        repo_id=args.push_to_hub,
        progress=not args.no_progress,
        stock_only=args.stock_only,
    )
    print(f"covft export: wrote {summary.line()}")
    print(f"covft export: load it with transformers.{summary.load_hint()}")
    if args.push_to_hub:
        url = push_to_hub(args.out, args.push_to_hub, private=True if args.private else None)
        print(f"covft export: uploaded to {url}")
    return 0
