"""The demo's frozen settings: world, model size and one schedule shared by every strategy.

These numbers were chosen from the paper's recipe and the CPU budget *before* any result was
seen, and are not tuned per method: every strategy gets the same stage-1 checkpoint, learning
rate, schedule, steps, batch size, data order and seed (the paper's configuration-aligned
comparison). ``QUICK`` is a smoke run (too short to rank methods); ``FULL`` is the comparison.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from covft.models.stage0 import Stage0Config

DEFAULT_METHODS = ("freeze", "full", "lora", "covft")


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines a demo run (besides the preset, methods and seeds)."""

    # the world
    world_size: int = 3000
    """Training conversations of the conflict world."""
    suite_size: int = 50
    """Scoring units per held-out benchmark (docs/world.md)."""
    world_seed: int = 0
    image_size: int = 64
    # the model (tiny preset)
    llm_hidden: int = 128
    llm_layers: int = 3
    vision_hidden: int | None = None
    """None: the presets' tower (width 128, 6 blocks)."""
    vision_layers: int | None = None
    vocab_size: int = 1024
    """BPE vocabulary trained on the world's text (tiny preset)."""
    text_encoder: str = "minilm"
    """Frozen text encoder: stage 0's caption targets and the context encoder of CoVFT / QA-ViT / Q-MoE."""
    # stage 0 (its tower options come from vision_hidden / vision_layers / image_size above)
    stage0: Stage0Config = field(default_factory=lambda: Stage0Config(steps=100, batch_size=64))
    # LM pretraining (tiny preset only): LLaVA starts from a pretrained LLM, the tiny LM from noise
    lm_corpus_size: int = 12000
    """Text-only conversations on fresh scenes, the image replaced by its caption
    (:mod:`covft.data.world.corpus`)."""
    lm_steps: int = 500
    """0: no LM pretraining (the smol preset's LM is pretrained already)."""
    lm_batch_size: int = 32
    lm_lr: float = 1e-3
    # stage 1 (projector only, "plain" template on captions)
    stage1_steps: int = 80
    stage1_batch_size: int = 32
    stage1_lr: float = 1e-3
    # stage 2 (identical for every strategy)
    stage2_steps: int = 300
    stage2_batch_size: int = 16
    stage2_lr: float = 5e-4
    """One learning rate for vision, projector and LLM (LLaVA-1.5 uses one lr for everything)."""
    group_by_modality_length: bool = True
    """As LLaVA-1.5: image and text-only samples in separate batches, sorted by length inside a
    batch (less padding). The same order for every method."""
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    save_steps: int = 100
    """Resumable checkpoints inside a stage (a killed run continues from the last one)."""
    # evaluation
    eval_batch_size: int = 32
    max_new_tokens: int = 16
    """Every suite answer is a few tokens; greedy decoding stops at EOS before this."""
    # the paper's mechanisms (covft.analysis; measured after stage 2, not a schedule of the methods)
    mechanism_steps: int = 60
    """Steps of each of the two Fig. 1c runs (full fine-tuning on grounding, on captions)."""
    mechanism_batch_size: int = 8
    mechanism_samples: int = 600
    """Training samples whose context vectors and gates each covft model gives (Fig. 3a/b)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (recorded in results.json and the stage hashes)."""
        return asdict(self)

    def key(self, *parts: str) -> str:
        """A short hash of these settings plus ``parts`` (names stage folders)."""
        payload = json.dumps([self.to_dict(), *parts], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]


#: The comparison: about 20 minutes for the tiny preset on 2 quiet CPU cores (docs/demo.md).
FULL = DemoSettings()

#: A smoke run: every stage, every plot, a few minutes; scores are near chance.
QUICK = replace(
    FULL,
    world_size=800,
    suite_size=12,
    lm_corpus_size=1000,
    lm_steps=60,
    stage0=Stage0Config(steps=30, batch_size=64),
    stage1_steps=20,
    stage2_steps=60,
    save_steps=0,
    mechanism_steps=10,
    mechanism_samples=150,
)


def micro(**overrides: Any) -> DemoSettings:
    """A seconds-scale run for tests: a tiny world, tower and LM, a handful of steps."""
    base = replace(
        FULL,
        world_size=60,
        suite_size=2,
        image_size=32,
        llm_hidden=32,
        llm_layers=1,
        vision_hidden=32,
        vision_layers=2,
        vocab_size=300,
        text_encoder="random-tiny",
        lm_corpus_size=24,
        lm_steps=2,
        lm_batch_size=8,
        stage0=Stage0Config(steps=4, batch_size=16, eval_pairs=8),
        stage1_steps=2,
        stage1_batch_size=8,
        stage2_steps=3,
        stage2_batch_size=4,
        save_steps=0,
        eval_batch_size=64,
        max_new_tokens=4,
        mechanism_steps=2,
        mechanism_batch_size=2,
        mechanism_samples=12,
    )
    return replace(base, **overrides)


#: The smol preset (SmolLM2-135M, ~30x the tiny LM's compute per token): a shorter schedule and
#: LLaVA's kind of learning rate for a pretrained LM, again one lr for every part and method.
SMOL_FULL = replace(
    FULL,
    world_size=1500,
    suite_size=30,
    stage1_steps=60,
    stage1_batch_size=16,
    stage2_steps=150,
    stage2_batch_size=8,
    stage2_lr=1e-4,
    lm_steps=0,
    save_steps=50,
    eval_batch_size=16,
)
SMOL_QUICK = replace(
    QUICK,
    world_size=400,
    suite_size=6,
    stage1_steps=10,
    stage1_batch_size=16,
    stage2_steps=20,
    stage2_batch_size=8,
    stage2_lr=1e-4,
    lm_steps=0,
    eval_batch_size=16,
)


def settings_for(preset: str, quick: bool) -> DemoSettings:
    """The frozen settings of a preset (``tiny`` or ``smol``), quick or full."""
    if preset == "smol":
        return SMOL_QUICK if quick else SMOL_FULL
    return QUICK if quick else FULL
