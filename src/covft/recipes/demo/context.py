"""The instruction vectors of the demo's world, encoded once for every CoVFT run of every seed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from covft.data.contract import router_context
from covft.models.text_encoder import load_text_encoder
from covft.recipes.demo.layout import DemoRun, StageLog, clock
from covft.recipes.demo.stage2 import routes_on_text
from covft.utils import cached_output

VECTORS_FILE = "vectors.safetensors"


def context_vectors(run: DemoRun, log: StageLog, items: dict[str, list[dict]]) -> Path | None:
    """The frozen text encoder's vector of every instruction of the world, computed once.

    The vectors are a pure function of the instruction text, so every CoVFT run of every seed
    (stage 2 and the suite) reads them from one file instead of encoding each instruction
    again (a MiniLM miss costs about as much CPU as the rest of a CoVFT step at the tiny
    geometry). Cached under ``<cache>/context/<hash>/vectors.safetensors``, the hash covering the
    encoder's fingerprint and every instruction (:func:`covft.utils.cached_output`). None when no
    method routes on the instruction, or on a CUDA GPU, where the encoder runs on the GPU with
    its batch for next to nothing.
    """
    if torch.cuda.is_available() or not any(routes_on_text(m) for m in run.methods):
        return None
    started = clock()
    records = json.loads((run.world_dir / "train.json").read_text(encoding="utf-8"))
    texts = [router_context(r) for r in records if r.get("image")]
    texts += [router_context(item) for rows in items.values() for item in rows]
    encoder = load_text_encoder(run.settings.pretrain.text_encoder)
    digest = hashlib.sha256(json.dumps([encoder.fingerprint(), sorted(set(texts))]).encode()).hexdigest()

    def build(folder: Path) -> dict[str, int]:
        count = encoder.precompute(texts)
        encoder.save_vectors(folder / VECTORS_FILE)
        return {"instructions": count}

    settings = {"encoder": encoder.fingerprint(), "instructions_sha256": digest}
    cached = cached_output(
        Path(run.cache_dir) / "context" / digest[:16], settings, build, what="context vectors"
    )
    log.record("context_vectors", "reused" if cached.reused else "ran", started,
               **({} if cached.reused else cached.info))  # fmt: skip
    return (cached.path / VECTORS_FILE).resolve()
