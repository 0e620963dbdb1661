"""Shared plumbing of the analyses: task families of LLaVA questions, data files, vision forwards.

The drivers that train runs and measure them with these helpers are in
:mod:`covft.recipes.analyses`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covft.data.templates import IMAGE_PLACEHOLDER

__all__ = [
    "TASK_PATTERNS",
    "block_list",
    "family_labels",
    "human_text",
    "load_records",
    "preserve_forward_state",
    "require_single_process",
    "task_of",
    "vision_forward",
    "write_records",
]

TASK_PATTERNS: dict[str, tuple[str, ...]] = {
    "grounding": (r"bounding box coordinate", r"\bbounding box\b", r"\bground(ing)?\b.*\bregion\b"),
    "region": (r"short description for (this|the) region", r"describe (this|the) region"),
    "caption": (
        r"describe (the|this) (image|picture|photo)",
        r"what is in the image\??$",
        r"\bcaption\b",
        r"brief description of the (image|picture|photo)",
        r"summari[sz]e the (visual )?content",
        # LLaVA's other brief-caption prompts ("Offer a succinct explanation of the picture
        # presented.", "Render a clear and concise summary of the photo.", ...)
        r"\b(brief|short|succinct|concise|compact|terse)\b.*\b(image|picture|photo|visual)",
        r"^<image>$|^$",
    ),
}
"""Regular expressions (case-insensitive, on a human turn without ``<image>``) naming a task family.

They cover the conflict world's prompts and LLaVA-1.5's: "Please provide the bounding box
coordinate of the region this sentence describes: ..." (grounding, RefCOCO/VG in the 665K mix),
"Please provide a short description for this region: [...]" (region captioning) and LLaVA's
brief-caption prompts. Order matters: grounding and region are tested before caption.
"""


def human_text(value: str) -> str:
    """A human turn without the ``<image>`` placeholder and surrounding whitespace."""
    return value.replace(IMAGE_PLACEHOLDER, " ").strip()


def task_of(question: str) -> str | None:
    """The task family of one human turn by :data:`TASK_PATTERNS`, or ``None`` for any other task."""
    text = " ".join(human_text(question).lower().split())
    for task, patterns in TASK_PATTERNS.items():
        if any(re.search(pattern, text) for pattern in patterns):
            return task
    return None


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Raw LLaVA-format records of a JSON list or JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a LLaVA-format JSON or JSONL file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of LLaVA records")
    return data


def write_records(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write records as a JSON list (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(records), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def family_labels(data: str | Path, records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Task family per sample id: for a conflict world's ``train.json``, its ``annotations/train.jsonl``
    (which describes that file's samples: the world's caption files reuse their ids for other
    questions), otherwise :func:`task_of` on the first human turn ("other" when no pattern fits)."""
    labels: dict[str, str] = {}
    annotations = Path(data).parent / "annotations" / "train.jsonl"
    if Path(data).name == "train.json" and annotations.is_file():
        for line in annotations.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                labels[str(item["id"])] = str(item["family"])
    for record in records:
        key = str(record.get("id"))
        if key not in labels:
            turns = [t["value"] for t in record.get("conversations", []) if t.get("from") == "human"]
            labels[key] = (task_of(turns[0]) if turns else None) or "other"
    return labels


def block_list(model: nn.Module) -> Sequence[nn.Module]:
    """The vision transformer blocks of a ``CovftModel``, a LLaVA model, a vision tower, or a list."""
    from covft.models import towers

    if isinstance(model, (nn.ModuleList, list, tuple)):
        return model
    if hasattr(model, "encoder_layers"):
        return model.encoder_layers
    if hasattr(model, "model") and hasattr(model.model, "vision_tower"):
        model = towers.vision_tower(model)
    return towers.find_encoder_layers(model)[1]


@contextlib.contextmanager
def preserve_forward_state(model: nn.Module) -> Iterator[None]:
    """Run extra forwards (probes) inside training without leaving traces: eval mode, and the
    shared context plus every module's ``last_gates``/``last_context``/``aux_loss`` restored after,
    so the trainer's routing statistics still describe the training batch."""
    saved = {}
    for module in model.modules():
        fields = {
            k: getattr(module, k) for k in ("last_gates", "last_context", "aux_loss") if hasattr(module, k)
        }
        if fields:
            saved[module] = fields
    context = getattr(model, "context", None)
    context_fields = (
        {k: getattr(context, k) for k in ("text", "text_tokens", "text_mask", "owner")}
        if context is not None
        else {}
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        for module, fields in saved.items():
            for key, value in fields.items():
                setattr(module, key, value)
        for key, value in context_fields.items():
            setattr(context, key, value)


def vision_forward(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Run only the vision tower of a ``CovftModel`` on a collated batch (context included); returns
    every block's output ``[B, N, d]`` in depth order. Call it under :func:`preserve_forward_state`."""
    pixel_values = batch["pixel_values"]
    parameter = next(model.vision_tower.parameters())
    pixel_values = pixel_values.to(device=parameter.device, dtype=parameter.dtype)
    ids = batch.get("context_input_ids")
    mask = batch.get("context_attention_mask")
    if ids is not None:
        ids = ids.to(parameter.device)
        mask = mask.to(parameter.device) if mask is not None else None
    model.set_context(ids, mask, pixel_values.shape[0])
    outputs = model.vision_tower(pixel_values=pixel_values, output_hidden_states=True)
    return tuple(outputs.hidden_states[1:])


def require_single_process(analysis: str) -> None:
    """The training analyses compare runs step by step from one process (snapshots, full gradients);
    under ``accelerate launch`` with several processes they would race on files and see sharded
    state, so refuse clearly."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise RuntimeError(
            f"covft analyze {analysis} runs on one process (found {dist.get_world_size()}). "
            "Fix: run it with plain `covft analyze`, not `accelerate launch`/`torchrun`"
        )
