"""The demo's frozen settings: the shipped starting point's recipe, the world and one stage-2
schedule shared by every strategy.

:class:`PretrainSettings` is the recipe of the method-agnostic starting point (tower, LM, stage
1) that the package ships and ``covft demo --from-scratch`` retrains; :class:`DemoSettings` adds
the demo world, stage 2 and the evaluation. The values were chosen from method-agnostic evidence
only (the ``freeze`` baseline's image gain in the blind control and the training losses; the
selection log is in docs/demo.md) and are not tuned per method: every strategy gets the same
starting point, learning rate, schedule, steps, batch size, data order and seed (the paper's
configuration-aligned comparison). ``QUICK`` is a smoke run (too short to rank methods);
``FULL`` is the comparison.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from covft.recipes.demo.stage0 import Stage0Config
from covft.recipes.world.tasks import FAMILY_WEIGHTS

DEFAULT_METHODS = ("freeze", "full", "lora", "covft")
PRETRAIN_VERSION = "2"
"""Bumped whenever the same recipe would train something different."""
STAGE0_OBJECTIVE: dict[str, float] = {"region_weight": 1.0, "attribute_weight": 4.0, "position_weight": 1.0}
"""Stage 0's losses beside CLIP's in every recipe: each object's patch aligned with its phrase and
classified by its words (weight 4 on the mean of four cross-entropies: 1 per attribute). Without
them the tower reads colour but not shape (docs/demo.md, selection log e8, e9)."""


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that determines the starting point (:mod:`covft.recipes.demo.pretrain`)."""

    preset: Literal["tiny", "smol"] = "tiny"
    """``tiny`` (shipped) or ``smol`` (SmolLM2 is pretrained already: no LM stage, nothing shipped)."""
    # the pretraining world: captions and dense captions of its images, its text for the tokenizer
    world_size: int = 20000
    world_seed: int = 1
    """Not the demo world's seed (0): pretraining never sees a demo training or suite image."""
    image_size: int = 64
    # the model (tiny preset)
    llm_hidden: int = 128
    llm_layers: int = 3
    vision_hidden: int | None = None
    """None: the preset's tower (width 128, 6 blocks)."""
    vision_layers: int | None = None
    vocab_size: int = 1024
    """BPE vocabulary trained on the pretraining world's text (tiny preset)."""
    text_encoder: str = "minilm"
    """Frozen text encoder: stage 0's caption targets and the context encoder of CoVFT / QA-ViT / Q-MoE."""
    # stage 0: the CLIP-like tower (its tower options come from the fields above), with each
    # object's patch aligned to its phrase and classified by its words (docs/demo.md, e9)
    stage0: Stage0Config = field(
        default_factory=lambda: Stage0Config(steps=600, batch_size=128, **STAGE0_OBJECTIVE)
    )
    # the LM on a text-only corpus, each image replaced by its complete description
    lm_corpus_size: int = 40000
    lm_describe_share: float = 0.0
    """Share of description requests in the LM corpus (:func:`covft.recipes.world.corpus.lm_corpus`)."""
    lm_steps: int = 1500
    """0: no LM stage (the smol preset's LM is pretrained already)."""
    lm_batch_size: int = 32
    lm_lr: float = 1e-3
    # stage 1a: the projector alone on dense captions (LLaVA-1.5's feature alignment), in the LM's
    # chat format (LLaVA's `plain` template assumes an LM of bare text; ours knows its chat only)
    stage1_steps: int = 200
    stage1_batch_size: int = 32
    stage1_lr: float = 1e-3
    # stage 1b: projector + LM (and the tower's feeding blocks), chat template, dense captions and
    # grounded captions of the same scenes (0 steps: skipped)
    stage1b_steps: int = 1000
    stage1b_batch_size: int = 32
    stage1b_lr: float = 5e-4
    stage1b_grounded_turns: int = 4
    """Grounded captions per image (``What is at 18,41?``, ``Where is the red star?``) beside the
    dense captions in stage 1b (:func:`covft.recipes.world.describe.grounded_caption_record`; 0:
    none; docs/demo.md, e15)."""
    stage1b_method: Literal["freeze", "full"] = "full"
    """What trains in stage 1b besides projector and LM: ``freeze`` (the tower stays as stage 0
    left it) or ``full`` (the tower's feeding blocks too, as ShareGPT4V's detailed-caption stage)."""
    warmup_ratio: float = 0.03
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    save_steps: int = 200
    """Resumable checkpoints inside a stage."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (recorded next to shipped weights and in results.json)."""
        return asdict(self)

    def key(self) -> str:
        """The recipe's hash: recorded next to shipped weights, checked before they are used."""
        payload = json.dumps([PRETRAIN_VERSION, self.to_dict()], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def model_options(self) -> dict[str, Any]:
        """The preset's keyword arguments for this recipe's model (no weights, no tokenizer)."""
        options: dict[str, Any] = {
            "vision_hidden": self.vision_hidden,
            "vision_layers": self.vision_layers,
            "image_size": self.image_size,
            "text_encoder": self.text_encoder,
        }
        if self.preset == "tiny":
            options.update(llm_hidden=self.llm_hidden, llm_layers=self.llm_layers)
        return options

    def stage0_config(self) -> Stage0Config:
        """Stage 0 with this recipe's tower options filled in."""
        return replace(
            self.stage0,
            vision_hidden=self.vision_hidden,
            vision_layers=self.vision_layers,
            image_size=self.image_size,
            text_encoder=self.text_encoder,
        )


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines a demo run (besides the methods and seeds)."""

    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    """The starting point every method and seed shares (shipped for ``FULL`` and ``QUICK``)."""
    # the demo world: the instruction-tuning mix and the held-out suite
    world_size: int = 3000
    """Training conversations of the conflict world."""
    suite_size: int = 50
    """Scoring units per held-out benchmark (docs/world.md)."""
    world_seed: int = 0
    family_weights: dict[str, float] = field(default_factory=lambda: dict(FAMILY_WEIGHTS))
    """Share of each task family in the instruction-tuning mix (:data:`covft.recipes.world.tasks.FAMILY_WEIGHTS`)."""
    # stage 2 (identical for every strategy)
    stage2_steps: int = 300
    stage2_batch_size: int = 16
    stage2_lr: float = 5e-4
    """One learning rate for vision, projector and LLM (LLaVA-1.5 uses one lr for everything)."""
    group_by_modality_length: bool = True
    """As LLaVA-1.5: image and text-only samples in separate batches, sorted by length inside a
    batch (less padding). The same order for every method."""
    warmup_ratio: float = 0.03
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
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
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Stage-2 precision: fp32, bf16, fp16, or auto (bf16 on a CUDA GPU that supports it, else fp32)."""

    @property
    def image_size(self) -> int:
        """The world's image size: the starting point's."""
        return self.pretrain.image_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (recorded in results.json and the stage hashes)."""
        return asdict(self)

    def train_precision(self) -> str:
        """The trainer's ``precision`` for stage 2: ``auto`` resolves on this machine."""
        if self.precision != "auto":
            return self.precision
        import torch

        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"

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
    stage2_steps=40,
    save_steps=0,
    mechanism_steps=10,
    mechanism_samples=150,
)


def micro_pretrain(**overrides: Any) -> PretrainSettings:
    """A seconds-scale recipe for tests: a tiny world, tower and LM, a handful of steps."""
    base = PretrainSettings(
        world_size=60,
        image_size=32,
        llm_hidden=32,
        llm_layers=1,
        vision_hidden=32,
        vision_layers=2,
        vocab_size=300,
        text_encoder="random-tiny",
        stage0=Stage0Config(steps=4, batch_size=16, eval_pairs=8, **STAGE0_OBJECTIVE),
        lm_corpus_size=24,
        lm_steps=2,
        lm_batch_size=8,
        stage1_steps=2,
        stage1_batch_size=8,
        stage1b_steps=2,
        stage1b_batch_size=8,
        save_steps=0,
    )
    return replace(base, **overrides)


def micro(**overrides: Any) -> DemoSettings:
    """A seconds-scale demo for tests (on :func:`micro_pretrain`, which is never shipped)."""
    base = DemoSettings(
        pretrain=micro_pretrain(),
        world_size=60,
        suite_size=2,
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


#: The smol preset (SmolLM2-135M, ~30x the tiny LM's compute per token): its own tower and
#: projector alignment (nothing shipped: SmolLM2's weights are not ours to ship), a shorter
#: schedule and LLaVA's kind of learning rate for a pretrained LM, one lr for every part and method.
SMOL_PRETRAIN = PretrainSettings(
    preset="smol",
    world_size=3000,
    stage0=Stage0Config(steps=100, batch_size=64, **STAGE0_OBJECTIVE),
    lm_steps=0,
    stage1_steps=60,
    stage1_batch_size=16,
    stage1b_steps=0,
    save_steps=50,
)
SMOL_FULL = replace(
    FULL,
    pretrain=SMOL_PRETRAIN,
    world_size=1500,
    suite_size=30,
    stage2_steps=150,
    stage2_batch_size=8,
    stage2_lr=1e-4,
    save_steps=50,
    eval_batch_size=16,
)
SMOL_QUICK = replace(
    SMOL_FULL,
    pretrain=replace(
        SMOL_PRETRAIN,
        world_size=400,
        stage0=Stage0Config(steps=30, batch_size=64, **STAGE0_OBJECTIVE),
        stage1_steps=10,
    ),
    world_size=400,
    suite_size=6,
    stage2_steps=20,
    save_steps=0,
)


#: The same pipeline at GPU scale (``covft demo --scale gpu``, docs/demo.md "GPU scale"): the
#: same starting point, a 6.7x world, 20x the stage-2 samples of ``FULL`` (1,500 steps x 64), a
#: 4x suite, bf16 on a CUDA GPU, the same learning rate and schedule for every method. Planned
#: for about 7 minutes with one seed (11 with two) on one H200-class GPU with 16 CPU cores; the
#: estimate is host-bound and explained in docs/demo.md.
GPU = replace(
    FULL,
    world_size=20000,
    suite_size=200,
    stage2_steps=1500,
    stage2_batch_size=64,
    save_steps=500,
    eval_batch_size=256,
    mechanism_steps=200,
    mechanism_batch_size=32,
    mechanism_samples=3000,
    precision="auto",
)

#: SmolLM2 at GPU scale (``--scale gpu --preset smol``, docs/demo.md "GPU scale"), the test the CPU
#: cannot afford (selection log e21, e23): a longer stage 1 with grounded captions (as the tiny
#: recipe's 1b) on the shipped world's size, 20x ``SMOL_FULL``'s stage-2 samples at its lr, bf16.
#: Planned for about 12 minutes with one seed on one H200-class GPU (an estimate; not run yet).
SMOL_GPU = replace(
    GPU, stage2_steps=750, stage2_batch_size=32, stage2_lr=SMOL_FULL.stage2_lr, eval_batch_size=128,
    mechanism_batch_size=16, mechanism_samples=1500,
    pretrain=replace(SMOL_PRETRAIN, world_size=20000, stage1_steps=300, stage1_batch_size=32,
                     stage1b_steps=300, stage1b_batch_size=32, stage1b_lr=SMOL_FULL.stage2_lr,
                     save_steps=150),
)  # fmt: skip


def settings_for(preset: str, quick: bool, scale: str = "cpu") -> DemoSettings:
    """The frozen settings of a preset (``tiny`` / ``smol``), quick or full, at ``scale`` (cpu / gpu)."""
    if scale == "gpu":
        if quick:
            raise ValueError("--scale gpu has no quick setting (drop --quick)")
        return SMOL_GPU if preset == "smol" else GPU
    if preset == "smol":
        return SMOL_QUICK if quick else SMOL_FULL
    return QUICK if quick else FULL
