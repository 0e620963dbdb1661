"""Write a covft model as a Hugging Face directory.

Strategies that keep the architecture (freeze, full, BitFit, selective) export as a stock directory
that transformers loads without covft; LoRA and DoRA are first merged into the weights they adapt
(PEFT's ``merge_and_unload``). Strategies that add modules stock transformers has no place for
(CoVFT, VPT, QA-ViT, Q-MoE) export as a directory that transformers loads with covft installed
(``trust_remote_code=True``; :mod:`covft.export.with_covft`), or are refused with ``stock_only``.

The directory holds what the wrapped model's ``save_pretrained`` writes (``config.json``,
``generation_config.json``, ``model.safetensors``), the family's processor (tokenizer, image
processor, ``processor_config.json``) and a model card (``README.md``) with the prompt format
covft trained with. It is written next to ``out`` and renamed into place, so an interrupted export
never leaves a complete-looking directory.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from covft._version import __version__
from covft.errors import ModelNotFoundError, NotExportableError
from covft.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from covft.strategies import UnknownMethodError, get_strategy, load_pretrained
from covft.utils import atomic_directory

CARD_NAME = "README.md"
EXAMPLE_QUESTION = "<image>\nWhat is in the image?"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    out: Path
    strategy: str | None
    folded: str
    architecture: str
    parameters: int
    dtype: str
    size_bytes: int
    needs_covft: bool = False

    def line(self) -> str:
        return (
            f"{self.out}: {self.architecture}, {self.parameters:,} parameters in {self.dtype}, "
            f"{self.size_bytes / 2**20:.1f} MiB; strategy {self.strategy or 'none'}: {self.folded}"
        )

    def load_hint(self) -> str:
        """The line that loads the export."""
        if self.needs_covft:
            return (
                f"AutoModelForImageTextToText.from_pretrained({str(self.out)!r}, trust_remote_code=True) "
                "with covft installed"
            )
        return f"AutoModelForImageTextToText.from_pretrained({str(self.out)!r}), without covft"


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    repo_id: str | None = None,
    progress: bool = False,
    stock_only: bool = False,
) -> ExportSummary:
    """Export the covft checkpoint directory ``checkpoint`` to ``out`` (see :func:`export_model`).

    Everything that can be checked without loading the model is checked first: the checkpoint,
    (with ``stock_only``) whether its strategy can be exported to stock transformers, and ``out``.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    config = checkpoint_config(checkpoint)
    if stock_only:
        check_exportable(config["strategy"])
    check_output(out, overwrite, keep=checkpoint)
    _say(progress, f"loading {checkpoint}")
    try:
        model = load_pretrained(checkpoint)
    except ValueError as error:  # format version, weights that do not fit the model
        raise ModelNotFoundError(f"{checkpoint} cannot be loaded as a covft checkpoint: {error}") from error
    return export_model(
        model,
        out,
        overwrite=overwrite,
        source=str(checkpoint),
        repo_id=repo_id,
        progress=progress,
        stock_only=stock_only,
    )


def export_model(
    model,
    out: str | Path,
    *,
    overwrite: bool = False,
    source: str | None = None,
    repo_id: str | None = None,
    progress: bool = False,
    stock_only: bool = False,
) -> ExportSummary:
    """Write ``model`` (a :class:`covft.CovftModel`) to ``out`` as a Hugging Face directory.

    A strategy that keeps the architecture is folded into the weights in place: afterwards
    ``model`` has no strategy (LoRA and DoRA adapters are merged away), and ``out`` is a stock
    directory. One that adds modules (CoVFT, VPT, QA-ViT, Q-MoE) is written as a directory that
    transformers loads with covft installed (:mod:`covft.export.with_covft`), unless
    ``stock_only``, which refuses it. ``source`` (where the model came from) and ``repo_id`` (where
    it will be uploaded) only go into the model card. A non-empty ``out`` is refused unless
    ``overwrite`` and it holds an earlier export.
    """
    from covft.export.families import processor_for
    from covft.strategies.llm import fold_llm_lora

    out = Path(out)
    strategy = model.strategy
    name = strategy.name if strategy else None
    if stock_only:
        check_exportable(name)
    check_output(out, overwrite)
    if strategy is not None and strategy.adds_beyond_stock:
        return _export_with_covft(model, out, name, source, repo_id, progress)
    processor = processor_for(model)
    _say(progress, "folding the strategy into the weights")
    folded_llm = fold_llm_lora(model)  # first: it unloads only the LLM's adapters
    folded = strategy.fold_into_stock(model) if strategy else "nothing to fold"
    folded = f"{folded}; {folded_llm}" if folded_llm else folded
    card = model_card(model, name, folded, source, repo_id or str(out))
    model.strategy = None
    _say(progress, f"writing {out}")
    with atomic_directory(out) as tmp:
        model.llava.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / CARD_NAME).write_text(card, encoding="utf-8")
    return ExportSummary(
        out=out,
        strategy=name,
        folded=folded,
        architecture=type(model.llava).__name__,
        parameters=sum(p.numel() for p in model.llava.parameters()),
        dtype=str(next(model.llava.parameters()).dtype).removeprefix("torch."),
        size_bytes=sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
    )


def _export_with_covft(model, out: Path, name: str, source, repo_id, progress: bool) -> ExportSummary:
    from covft.export import with_covft

    _say(
        progress,
        f"writing {out} (loads with covft installed: {name} adds modules stock transformers has none of)",
    )
    card = with_covft.model_card(model, name, source, repo_id or str(out))
    with atomic_directory(out) as tmp:
        with_covft.write(model, tmp, card)
    return ExportSummary(
        out=out,
        strategy=name,
        folded=f"kept as covft modules ({model.strategy.adds_beyond_stock})",
        architecture=f"covft {name} on {type(model.llava).__name__}",
        parameters=sum(
            p.numel() for name_, p in model.named_parameters() if not name_.startswith("text_encoder.")
        ),
        dtype=str(next(model.llava.parameters()).dtype).removeprefix("torch."),
        size_bytes=sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
        needs_covft=True,
    )


def checkpoint_config(path: Path) -> dict:
    """The covft config of checkpoint ``path``, or an error that says what ``path`` is instead."""
    from covft.train.checkpoint import is_complete, list_checkpoints

    expected = (
        "expected a covft checkpoint directory (a finished run's output_dir, or one written by "
        f"save_pretrained) holding {CONFIG_NAME} and {WEIGHTS_NAME}"
    )
    if not path.exists():
        raise ModelNotFoundError(f"{path} does not exist: {expected}")
    if not path.is_dir():
        raise ModelNotFoundError(f"{path} is a file: {expected}")
    if is_complete(path):
        raise ModelNotFoundError(
            f"{path} is a resumable training checkpoint (optimizer and RNG state), not a model: "
            f"export the run's output_dir once the run has finished ({expected})"
        )
    if not (path / CONFIG_NAME).is_file():
        if list_checkpoints(path):
            found = f"training checkpoints but no {CONFIG_NAME}: the run has not finished (resume it)"
        elif (path / "config.json").is_file():
            found = "a Hugging Face model directory already: load it with transformers, nothing to export"
        else:
            found = f"no {CONFIG_NAME}"
        raise ModelNotFoundError(f"{path} holds {found}; {expected}")
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelNotFoundError(
            f"{path / CONFIG_NAME} is not valid JSON ({error}): the checkpoint is damaged"
        ) from error
    if not (path / WEIGHTS_NAME).is_file():
        raise ModelNotFoundError(f"{path} has no {WEIGHTS_NAME}: {expected}")
    if "strategy" not in config:
        raise ModelNotFoundError(f"{path / CONFIG_NAME} names no strategy: {expected}")
    if config["strategy"] is not None:
        try:
            get_strategy(config["strategy"])
        except UnknownMethodError as error:  # a checkpoint of another covft version
            raise ModelNotFoundError(f"{path / CONFIG_NAME}: {error}") from error
    return config


def check_exportable(strategy: str | None) -> None:
    """Refuse a strategy whose modules stock transformers has no place for, saying what to do."""
    if strategy is None:
        return
    blocker = get_strategy(strategy).adds_beyond_stock
    if blocker:
        raise NotExportableError(
            f"strategy {strategy!r} cannot be exported to a stock transformers model: it adds {blocker}, "
            "which stock transformers has no module for. Without --stock-only it exports as a directory "
            "that transformers loads with covft installed (trust_remote_code=True)"
        )


def check_output(out: Path, overwrite: bool, keep: Path | None = None) -> None:
    """Refuse an ``out`` that would destroy something: a file, a non-empty directory (unless
    ``overwrite`` and it is an earlier export), or a directory holding ``keep`` (the checkpoint)."""
    if keep is not None and (out.resolve() == keep.resolve() or out.resolve() in keep.resolve().parents):
        raise FileExistsError(f"{out} holds the checkpoint {keep}; export to another directory")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; give a directory to export to")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{out} exists and is not empty: choose another directory, or --overwrite to replace it"
        )
    if not (out / "config.json").is_file():
        raise FileExistsError(
            f"{out} is not an earlier export (no config.json), so --overwrite will not delete it: "
            "choose another directory"
        )


def model_card(model, strategy: str | None, folded: str, source: str | None, location: str) -> str:
    """README.md: how to load the model (from ``location``, a path or a Hub repository) and the
    prompt format covft trained it with."""
    origin = f" from `{source}`" if source else ""
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags:
- covft
- {model.config.model_type}
---

# {Path(location).name}

A `{type(model.llava).__name__}` exported by covft {__version__}{origin} (vision strategy
`{strategy or "none"}`: {folded}). It is a stock transformers model: loading it does not need covft.

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{location}")
processor = AutoProcessor.from_pretrained("{location}")
```

## Prompt format

covft trained it with its `{model.template}` template; one question about one image is prompted as

```text
{example_prompt(model)}
```

and `processor(images=image, text=prompt)` expands `<image>` into the image's tokens. covft pads
every image to a square with the image processor's mean colour before preprocessing (LLaVA-1.5's
`pad`); pad the same way to get covft's outputs.
"""


def example_prompt(model) -> str:
    """The text covft's collator tokenizes for one question about one image, BOS token included."""
    from covft.data.templates import render

    tokenizer = model.tokenizer
    segments = render(
        [{"from": "human", "value": EXAMPLE_QUESTION}],
        model.template,
        eos_token=tokenizer.eos_token or "",
        tokenizer=tokenizer,
        add_generation_prompt=True,
    )
    bos = tokenizer.bos_token if model.template != "chat" else None  # the collator's rule
    return (bos or "") + "".join(segment.text for segment in segments)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"covft export: {message}", file=sys.stderr, flush=True)
