"""Model presets: build LLaVA models without downloads, or load a local checkpoint.

- ``tiny-test``: random and tiny (seconds on CPU), for tests; every family (``family=``), CLIP or
  SigLIP tower.
- released checkpoints' geometries, random weights or ``device="meta"`` (profiling, parameter
  counts): ``llava-1.5-7b``, ``llava-1.5-13b``, ``llava-next-7b``, ``llava-ov-0.5b``,
  ``llava-ov-7b`` (:mod:`covft.models.geometries`), ``qwen2.5-vl-3b``, ``qwen2.5-vl-7b``,
  ``qwen3-vl-2b``, ``qwen3-vl-8b`` (:mod:`covft.models.qwen`).
- a local directory: a Hugging Face checkpoint of one of covft's families (e.g. a downloaded
  ``llava-hf/llava-1.5-7b-hf`` or ``Qwen/Qwen2.5-VL-7B-Instruct``) or a covft checkpoint (``covft_config.json`` inside).

Other presets register themselves with :func:`register_preset`, or are declared by an installed
package under the ``covft.presets`` entry-point group (``name = "module:builder"``) and imported on
first use: that is how the demo's ``tiny`` and ``smol`` (in :mod:`covft.recipes.demo.presets`, above
this layer) are found, and how a third-party package adds its own.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from covft.errors import ModelNotFoundError
from covft.models import precision
from covft.models.assembly import (
    anyres_parts,
    assemble,
    image_processor_for,
    llama_config,
    load_processor,
    vision_config,
)
from covft.models.checkpoint import is_checkpoint
from covft.models.families import FAMILIES, Family
from covft.models.model import CovftModel
from covft.models.qwen import PRESETS as QWEN_PRESETS
from covft.models.qwen import QWEN_FAMILIES, tiny_qwen
from covft.utils.hints import did_you_mean

PRESETS: dict[str, Callable[..., CovftModel]] = {}


def register_preset(name: str) -> Callable[[Callable[..., CovftModel]], Callable[..., CovftModel]]:
    def decorate(fn: Callable[..., CovftModel]) -> Callable[..., CovftModel]:
        PRESETS[name] = fn
        return fn

    return decorate


PRESET_ENTRY_POINTS = "covft.presets"
"""The entry-point group through which installed packages declare presets."""


def _declared_presets() -> dict[str, Any]:
    return {point.name: point for point in entry_points(group=PRESET_ENTRY_POINTS)}


def available_presets() -> list[str]:
    return sorted(set(PRESETS) | set(_declared_presets()))


def build_model(name_or_path: str, **kwargs: Any) -> CovftModel:
    """Build a model from a preset name or a local Hugging Face LLaVA checkpoint directory.

    ``covft.build_model`` also loads covft checkpoints (their strategy is re-applied, which is a
    layer above the models).
    """
    if name_or_path in PRESETS:
        return PRESETS[name_or_path](**kwargs)
    declared = _declared_presets().get(str(name_or_path))
    if declared is not None:
        return declared.load()(**kwargs)
    path = Path(name_or_path)
    if is_checkpoint(path):
        raise ModelNotFoundError(
            f"{path} is a covft checkpoint: load it with covft.build_model or covft.load_pretrained, "
            "which re-apply its strategy"
        )
    if (path / "config.json").is_file():
        return from_hf_checkpoint(path, **kwargs)
    hint = did_you_mean(name_or_path, available_presets(), template=" Did you mean the preset {!r}?")
    raise ModelNotFoundError(
        f"{name_or_path!r} is neither a preset ({', '.join(available_presets())}) nor a directory with a "
        f"covft_config.json or a Hugging Face LLaVA config.json.{hint}"
    )


def rebuild_base(base: dict[str, Any], *, device, dtype, text_encoder: str) -> CovftModel:
    """The base model ``base`` records (``CovftModel.base``: a preset and its options, or a local
    Hugging Face directory) on ``device`` in ``dtype`` (what a delta checkpoint is applied to).

    A preset that takes ``device`` / ``dtype`` builds there and so; one that does not is moved and
    cast afterwards (rotary buffers kept in float32, :func:`covft.models.precision.cast`).
    """
    kwargs = {**base.get("kwargs", {}), "text_encoder": text_encoder}
    if not base.get("preset"):
        return from_hf_checkpoint(base["path"], **kwargs, dtype=dtype, device=str(device))
    name = base["preset"]
    builder = PRESETS.get(name)
    if builder is None:
        if name not in _declared_presets():
            raise ModelNotFoundError(
                f"the base preset {name!r} is not available ({', '.join(available_presets())}): install "
                "the package that declares it"
            )
        builder = _declared_presets()[name].load()
    takes = inspect.signature(builder).parameters
    keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values())
    for option, value in (("device", str(device)), ("dtype", dtype)):
        if keywords or option in takes:
            kwargs[option] = value
    model = builder(**kwargs)
    model.llava.to(device)
    if precision.dtype_of(model.llava) != dtype:
        precision.cast(model.llava, dtype)
    return model


@register_preset("tiny-test")
def tiny_test(
    *,
    vision_layers: int = 4,
    vision_tower: str | None = None,
    seed: int = 0,
    text_encoder: str = "minilm",
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    llm_hidden: int = 64,
    llm_layers: int = 2,
    device: str = "cpu",
    family: str = "llava",
) -> CovftModel:
    """A random LLaVA small enough for unit tests: seconds on a laptop CPU.

    ``family`` picks the transformers class: ``llava`` (LLaVA-1.5), ``llava_next`` or
    ``llava_onevision`` (anyres tiles of ``image_size``; see :func:`anyres_parts`), ``qwen2_vl``,
    ``qwen2_5_vl`` or ``qwen3_vl`` (packed towers; see :func:`covft.models.qwen.tiny_qwen`).
    ``vision_tower`` (``clip`` or ``siglip``) defaults to the family's: SigLIP for OneVision, CLIP
    otherwise.
    """
    from covft.models.tokenizer import byte_tokenizer

    if vision_tower is None:
        vision_tower = "siglip" if family == "llava_onevision" else "clip"
    if family == "llava_onevision" and vision_tower != "siglip":
        raise ValueError(
            "LLaVA-OneVision's processor counts image tokens for a tower without a class token and "
            "with every token kept (SigLIP, vision_feature_select_strategy='full'): use vision_tower='siglip'"
        )

    tokenizer = byte_tokenizer()
    vision = vision_config(
        vision_tower,
        hidden=vision_hidden,
        layers=vision_layers,
        heads=4,
        image_size=image_size,
        patch_size=patch_size,
        intermediate=4 * vision_hidden,
    )
    text = llama_config(
        tokenizer,
        hidden=llm_hidden,
        layers=llm_layers,
        heads=4,
        kv_heads=2,
        intermediate=2 * llm_hidden,
        max_positions=4096,
    )
    base = {
        "preset": "tiny-test",
        "kwargs": dict(
            vision_layers=vision_layers,
            vision_tower=vision_tower,
            seed=seed,
            text_encoder=text_encoder,
            image_size=image_size,
            patch_size=patch_size,
            vision_hidden=vision_hidden,
            llm_hidden=llm_hidden,
            llm_layers=llm_layers,
        ),
    }
    if family in QWEN_FAMILIES:
        base["kwargs"]["family"] = family
        del base["kwargs"]["vision_tower"]
        return tiny_qwen(family, device=device, base=base)
    family_config, processor = None, None
    image_processor = image_processor_for(vision_tower, image_size)
    if family != "llava":
        base["kwargs"]["family"] = family
        family_config, image_processor, processor = anyres_parts(
            family, vision_tower, image_size, patch_size, tokenizer
        )
    return assemble(
        vision_config=vision,
        text_config=text,
        tokenizer=tokenizer,
        image_processor=image_processor,
        seed=seed,
        device=device,
        text_encoder=text_encoder,
        template="vicuna_v1",
        base=base,
        vision_feature_layer=-2 if family != "llava_onevision" else -1,
        family=family,
        family_config=family_config,
        processor=processor,
    )


PRESETS.update(QWEN_PRESETS)


def from_hf_checkpoint(
    path: str | Path,
    *,
    text_encoder: str = "minilm",
    template: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: str = "cpu",
) -> CovftModel:
    """Load a local Hugging Face checkpoint of one of covft's families (its ``config.json``
    ``model_type`` picks the transformers class, :mod:`covft.models.families`).

    ``template`` defaults to ``vicuna_v1`` for LLaVA-1.5 (what its checkpoints are trained with)
    and to the tokenizer's chat template (``chat``) for the others when it has one.
    """
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    family = check_family(path)
    dtype = precision.as_dtype(dtype)
    llava = getattr(transformers, family.model_class).from_pretrained(
        str(path), dtype=dtype or torch.float32, device_map=device if device != "cpu" else None
    )
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    image_processor = AutoImageProcessor.from_pretrained(str(path))
    processor = None if family.name == "llava" else load_processor(path, family, image_processor, tokenizer)
    if template is None:
        chat = family.name != "llava" and getattr(tokenizer, "chat_template", None)
        template = "chat" if chat else "vicuna_v1"
    base = {"path": str(Path(path).resolve()), "kwargs": {"text_encoder": text_encoder}}
    return CovftModel(
        llava,
        tokenizer,
        image_processor,
        template=template,
        text_encoder=text_encoder,
        base=base,
        processor=processor,
    )


def check_family(path: str | Path) -> Family:
    """The family of a checkpoint directory; a checkpoint of another family is refused before
    transformers could half-load it into a class of ours (``from_pretrained`` of a mismatched
    directory only warns and initialises the weights it cannot place at random)."""
    config = Path(path) / "config.json"
    model_type = "llava"
    if config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type") or "llava"
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    raise NotImplementedError(
        f"{path} is a {model_type!r} checkpoint; covft supports "
        f"{', '.join(f'{f.display} ({name})' for name, f in FAMILIES.items())} so far. Which "
        "families are supported and planned: docs/families.md"
    )
