"""The demo's method-agnostic starting point: tower, LM and stage 1, pretrained once and shipped.

LLaVA-1.5 starts from a pretrained CLIP and a pretrained Vicuna, and the CoVFT release ships its
stage-1 projector: what every method shares is made once, and the experiment spends its budget
on instruction tuning, where the methods differ. The demo does the same at its scale:
:func:`pretrain` runs the recipe (:class:`PretrainSettings`) and :func:`export` writes the result
as a covft checkpoint with its recipe and hashes; the package ships one such folder
(:data:`SHIPPED`), which ``covft demo`` verifies and starts from (``--from-scratch`` reruns the
recipe instead).

The recipe, every stage trained by this package's code on a world of its own (``world_seed``,
disjoint from the demo world's images and suite):

1. **tokenizer**: byte-level BPE on the pretraining world's text;
2. **stage 0**: the CLIP-like tower, contrastive against frozen MiniLM caption embeddings
   (:mod:`covft.recipes.demo.stage0`);
3. **LM**: the small LM on a text-only corpus where each image is replaced by its complete
   description (:mod:`covft.recipes.world.corpus`): it learns each family's reasoning from text;
4. **stage 1a**: the projector alone on dense captions (LLaVA-1.5's feature alignment, in the
   LM's chat format);
5. **stage 1b** (optional): projector and LM on the same dense captions in the chat format
   (ShareGPT4V's / LLaVA-NeXT's detailed-caption stage) and on grounded captions of the same
   scenes (``stage1b_grounded_turns``: ``What is at 57,78?``, ``Where is the ...?``), with the
   tower's feeding blocks when ``stage1b_method`` is ``full`` (the shipped recipe) or the tower
   frozen with ``freeze``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from covft.models.checkpoint import file_sha256
from covft.recipes.demo.layout import StageLog, clock
from covft.recipes.demo.settings import PRETRAIN_VERSION, PretrainSettings
from covft.recipes.demo.stage0 import STAGE0_VERSION
from covft.recipes.demo.stages import logged_world, train_loop, train_stage
from covft.recipes.demo.tokenizer import TOKENIZER_VERSION, world_tokenizer
from covft.recipes.world.corpus import CORPUS_VERSION
from covft.recipes.world.describe import GROUNDED_VERSION, write_grounded_captions
from covft.recipes.world.generate import WORLD_VERSION
from covft.utils import atomic_directory

RECIPE_FILE = "recipe.json"
SUMS_FILE = "SHA256SUMS"
CURVE_POINTS = 200
SHIPPED = Path(__file__).with_name("pretrained")
"""The starting point shipped with the package (written by ``covft demo pretrain``)."""


class PretrainedMismatch(RuntimeError):
    """Shipped weights that are missing, damaged or made by another recipe than the code's."""


def code_versions() -> dict[str, str]:
    """The versions of the code a starting point depends on besides its settings (the world, the LM
    corpus, the tokenizer, stage 0, the grounded captions, the recipe): recorded next to shipped
    weights and checked with the settings, so bumping any of them retrains instead of reusing."""
    return {
        "pretrain": PRETRAIN_VERSION,
        "world": WORLD_VERSION,
        "corpus": CORPUS_VERSION,
        "tokenizer": TOKENIZER_VERSION,
        "stage0": STAGE0_VERSION,
        "grounded": GROUNDED_VERSION,
    }


# --------------------------------------------------------------------------- the recipe


def _run_config(
    settings: PretrainSettings,
    name: str,
    output: Path,
    data: dict[str, Any],
    *,
    options: dict[str, Any],
    stage: int,
    steps: int,
    batch_size: int,
    lr: float,
    progress: bool,
    init_from: Path | None = None,
    extra: dict[str, Any] | None = None,
    method: str = "freeze",
) -> dict[str, Any]:
    """A ``covft.train`` config of one recipe stage (``freeze``: the tower does not train)."""
    return {
        "model": settings.preset,
        "model_options": {**options, **(extra or {})},
        "method": method,
        "stage": stage,
        "init_from": None if init_from is None else str(init_from),
        "output_dir": str(output),
        "name": name,
        "resume": True,
        "data": data,
        "train": train_loop(settings, steps=steps, batch_size=batch_size, lr=lr, seed=0, progress=progress),
    }


def curve(losses: list[float], points: int = CURVE_POINTS) -> list[float]:
    """``losses`` averaged into at most ``points`` equal bins (a loss curve small enough to ship)."""
    if len(losses) <= points:
        return [round(x, 5) for x in losses]
    edges = [round(i * len(losses) / points) for i in range(points + 1)]
    return [round(sum(losses[a:b]) / (b - a), 5) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _trained(name: str, config: dict[str, Any], log: Any) -> dict[str, Any]:
    """Train one recipe stage (or reuse it); its final metrics and loss curve."""
    from covft.train.logging import read_log

    metrics = train_stage(name, config, log)["metrics"]
    losses = [r["loss"] for r in read_log(config["output_dir"]) if "loss" in r]
    return {"metrics": metrics, "steps": config["train"]["max_steps"], "curve": curve(losses)}


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def stage_folders(settings: PretrainSettings, cache_dir: Path) -> dict[str, Path]:
    """Where each recipe stage lives, named by a hash of what determines it (so a changed later
    stage reuses the earlier ones)."""
    s = settings
    root = (Path(cache_dir) / "pretrain").resolve()
    world = _key(WORLD_VERSION, s.world_size, s.world_seed, s.image_size)
    schedule = (s.warmup_ratio, s.lr_scheduler)
    text = (CORPUS_VERSION, TOKENIZER_VERSION, s.vocab_size, s.llm_hidden, s.llm_layers, s.lm_corpus_size)
    lm = _key(
        PRETRAIN_VERSION, world, *text, s.lm_describe_share, s.lm_steps, s.lm_batch_size, s.lm_lr, schedule
    )
    stage0 = (STAGE0_VERSION, asdict(s.stage0_config()))
    stage1a = _key(lm, s.preset, *stage0, s.stage1_steps, s.stage1_batch_size, s.stage1_lr)
    grounded = () if s.stage1b_grounded_turns == 0 else (GROUNDED_VERSION, s.stage1b_grounded_turns)
    stage1b = _key(stage1a, s.stage1b_steps, s.stage1b_batch_size, s.stage1b_lr, s.stage1b_method, *grounded)
    return {
        "world": root / f"world-{world}",
        "lm": root / f"lm-{lm}",
        "stage1a": root / f"stage1a-{stage1a}",
        "stage1b": root / f"stage1b-{stage1b}",
    }


def _world_and_options(
    settings: PretrainSettings, world: Path, cache_dir: Path, progress: bool, log: Any
) -> dict[str, Any]:
    """Make (or reuse) the pretraining world in ``world``; the preset's options with its tokenizer
    (tiny) or its LM cache (smol)."""
    logged_world(world, log, "pretrain/world", progress=progress, size=settings.world_size,
                 seed=settings.world_seed, suite_size=0, image_size=settings.image_size)  # fmt: skip
    options = settings.model_options()
    if settings.preset == "tiny":
        options["tokenizer_dir"] = str(world_tokenizer(world, cache_dir, settings.vocab_size).resolve())
    else:
        options["cache_dir"] = str(Path(cache_dir).resolve())
    return options


def _train_lm(
    settings: PretrainSettings, folders: dict[str, Path], options: dict[str, Any], progress: bool, log: Any
) -> dict[str, Any]:
    """The LM stage on the world in ``folders`` with the preset ``options`` already resolved."""
    from covft.recipes.world.corpus import write_lm_corpus

    corpus = write_lm_corpus(folders["world"] / "lm_corpus.json", settings.lm_corpus_size, seed=settings.world_seed,
                             image_size=settings.image_size, describe_share=settings.lm_describe_share)  # fmt: skip
    text = {"train": str(corpus), "image_folder": None, "group_by_modality_length": False}
    config = _run_config(settings, "LM on described scenes", folders["lm"], text, options=options, stage=2,
                         steps=settings.lm_steps, batch_size=settings.lm_batch_size, lr=settings.lm_lr,
                         progress=progress)  # fmt: skip
    config["method_options"] = {"train_projector": False}  # no image reaches it: text only
    return _trained("pretrain/lm", config, log)


def pretrain(
    settings: PretrainSettings, *, cache_dir: Path, progress: bool = True, log: Any = None
) -> tuple[Path, dict[str, Any]]:
    """Run (or resume) the recipe under ``<cache_dir>/pretrain/``; returns the final run's folder
    (a covft checkpoint) and a summary (stage-0 retrieval, final metrics of every stage).

    Each stage is reused when finished and resumed when interrupted; its folder is named by what
    determines it (:func:`stage_folders`).
    """
    from covft.recipes.demo.stage0 import pretrain_vision_tower, read_losses

    folders = stage_folders(settings, cache_dir)
    world = folders["world"]
    log = log or StageLog(world.parent)
    options = _world_and_options(settings, world, cache_dir, progress, log)
    started = clock()
    stage0 = pretrain_vision_tower(world, settings.stage0_config(), cache_dir=cache_dir, progress=progress)
    log.record("pretrain/stage0", "reused" if stage0.reused else "ran", started, key=stage0.key)
    summary: dict[str, Any] = {"stage0": {**stage0.info, "curve": curve(read_losses(stage0))}}
    weights = {"vision_weights": str(stage0.path.resolve())}
    if settings.preset == "tiny" and settings.lm_steps > 0:
        summary["lm"] = _train_lm(settings, folders, options, progress, log)
        weights["llm_weights"] = str(folders["lm"] / "model.safetensors")

    train = functools.partial(_run_config, settings, options=options, progress=progress)
    dense = {"train": str(world / "dense_captions.json"), "image_folder": str(world)}
    config = train("stage 1a (projector, dense captions)", folders["stage1a"], {**dense, "template": "chat"},
                   stage=1, steps=settings.stage1_steps, batch_size=settings.stage1_batch_size,
                   lr=settings.stage1_lr, extra=weights)  # fmt: skip
    summary["stage1a"] = _trained("pretrain/stage1a", config, log)
    if settings.stage1b_steps <= 0:
        return folders["stage1a"], summary
    # one conversation of grounded captions per image beside its dense caption
    if settings.stage1b_grounded_turns > 0:
        grounded = write_grounded_captions(world, settings.stage1b_grounded_turns, seed=settings.world_seed)
        dense = {**dense, "train": [dense["train"], str(grounded)]}
    config = train("stage 1b (projector + LM, dense captions)", folders["stage1b"], {**dense, "template": "chat"},
                   stage=2, init_from=folders["stage1a"], steps=settings.stage1b_steps,
                   batch_size=settings.stage1b_batch_size, lr=settings.stage1b_lr,
                   method=settings.stage1b_method)  # fmt: skip
    summary["stage1b"] = _trained("pretrain/stage1b", config, log)
    return folders["stage1b"], summary


# --------------------------------------------------------------------------- shipping


CHECKPOINT_FILES = (
    "covft_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
)
"""What a shipped starting point holds besides its recipe: a complete covft checkpoint."""


def export(
    run_dir: Path, target: Path, settings: PretrainSettings, *, command: str, summary: dict[str, Any]
) -> Path:
    """Copy the final checkpoint of :func:`pretrain` to ``target`` with its recipe and hashes.

    ``recipe.json`` records the settings, their key, the command that made them and the summary;
    ``SHA256SUMS`` the hash of every file (``sha256sum -c`` reads it).
    """
    summary = {**summary}
    if "world" in summary.get("stage0", {}):  # where it was made: only the folder's name ships
        summary["stage0"] = {**summary["stage0"], "world": Path(summary["stage0"]["world"]).name}
    recipe = {
        "version": PRETRAIN_VERSION,
        "key": settings.key(),
        "code_versions": code_versions(),
        "command": command,
        "settings": settings.to_dict(),
        "summary": summary,
    }
    target = Path(target)
    with atomic_directory(target) as tmp:
        for name in CHECKPOINT_FILES:
            if (Path(run_dir) / name).is_file():
                shutil.copy2(Path(run_dir) / name, tmp / name)
        config = json.loads((tmp / "covft_config.json").read_text(encoding="utf-8"))
        config["base"] = {"preset": "tiny", "kwargs": settings.model_options()}  # no paths of this machine
        (tmp / "covft_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / RECIPE_FILE).write_text(json.dumps(recipe, indent=2, default=str) + "\n", encoding="utf-8")
        sums = [
            f"{file_sha256(path)}  {path.name}\n" for path in sorted(tmp.iterdir()) if path.name != SUMS_FILE
        ]
        (tmp / SUMS_FILE).write_text("".join(sums), encoding="utf-8")
    return target


def verify(folder: Path, settings: PretrainSettings) -> Path:
    """Check that ``folder`` holds intact weights of exactly ``settings``' recipe; returns it.

    Raises :class:`PretrainedMismatch` naming what is wrong and how to fix it.
    """
    folder = Path(folder)
    fix = (
        "Fix: `covft demo --from-scratch` trains the starting point of the code's recipe (about 40 "
        f"minutes on two idle cores), or `covft demo pretrain --out {folder}` rewrites the shipped one"
    )
    recipe_path = folder / RECIPE_FILE
    if not recipe_path.is_file() or not (folder / SUMS_FILE).is_file():
        raise PretrainedMismatch(f"no pretrained starting point in {folder} ({RECIPE_FILE} missing). {fix}")
    recipe = json.loads(recipe_path.read_text(encoding="utf-8"))
    if recipe.get("key") != settings.key():
        shipped = recipe.get("settings", {})
        changed = sorted(
            k for k, v in settings.to_dict().items() if json.loads(json.dumps(v)) != shipped.get(k)
        )
        raise PretrainedMismatch(
            f"the starting point in {folder} was made by recipe {recipe.get('key')}, the code's recipe is "
            f"{settings.key()} (fields that differ: {', '.join(changed) or 'the recipe version'}). {fix}"
        )
    shipped = recipe.get("code_versions", {})
    if stale := sorted(k for k, v in code_versions().items() if shipped.get(k) != v):
        made = ", ".join(f"{k} {shipped.get(k, '?')} -> {code_versions()[k]}" for k in stale)
        raise PretrainedMismatch(
            f"the starting point in {folder} was made by older code than this one ({made}; "
            f"the versions in {RECIPE_FILE} against the code's). {fix}"
        )
    for line in (folder / SUMS_FILE).read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        path = folder / name
        if not path.is_file() or file_sha256(path) != digest:
            raise PretrainedMismatch(
                f"{path} is missing or damaged: its sha256 does not match {SUMS_FILE} (a Git LFS pointer "
                f"or a partial checkout?). {fix}"
            )
    return folder
