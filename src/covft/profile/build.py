"""The models and batches that `covft profile` measures: every strategy from the same base weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from covft.models import build_model
from covft.models.precision import as_dtype
from covft.profile.settings import TINY_DEFAULTS, ProfileSettings
from covft.strategies import apply_vft, get_strategy
from covft.strategies.base import make_options

__all__ = ["build_for_profile", "synthetic_batch"]


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _needs_text(method: str, options: dict[str, Any]) -> bool:
    cls = get_strategy(method)
    return bool(cls(make_options(cls, options)).needs_text)


def _random_bert_base(device: torch.device):
    """bert-base-uncased's geometry (d=768, 12 layers) with random weights: no download, same cost."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from covft.models.text_encoder import FrozenTextEncoder, minilm_path

    with torch.device(device):
        model = BertModel(BertConfig(), add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())  # the same uncased WordPiece vocabulary
    return FrozenTextEncoder(model, tokenizer, "bert-base-uncased (random weights)")


def build_for_profile(settings: ProfileSettings, method: str):
    """The geometry's model with ``method`` applied, on the settings' device and dtype.

    Every strategy starts from the same seed, so from the same base weights. The 7B model is
    allocated directly in the target dtype on the target device (no float32 copy).
    """
    options = {"train_llm": settings.train_llm, **settings.options.get(method, {})}
    device = torch.device(settings.device)
    dtype = as_dtype(settings.dtype)
    with _default_dtype(dtype):
        if settings.geometry == "tiny":
            kwargs = {**TINY_DEFAULTS, "llm_layers": settings.llm_layers}
            if settings.vision_layers is not None:
                kwargs["vision_layers"] = settings.vision_layers
            model = build_model("tiny-test", seed=settings.seed, text_encoder="random-tiny", **kwargs)
            model.to(device=device, dtype=dtype)
        else:
            model = build_model(
                "llava-1.5-7b",
                device=str(device),
                dtype=dtype,
                seed=settings.seed,
                llm_layers=settings.llm_layers,
            )
            if _needs_text(method, options):
                model.text_encoder = _random_bert_base(device)
        apply_vft(model, method, **options)
    if model.text_encoder is not None:
        model.text_encoder.to(device=device, dtype=dtype)
        # measure the uncached cost: every instruction encoded (the worst case, no repeated questions)
        model.text_encoder.cache_size = 0
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def synthetic_batch(
    model, *, batch_size: int, text_tokens: int, context_tokens: int, seed: int, train: bool = True
) -> dict[str, torch.Tensor]:
    """A batch shaped like a LLaVA instruction sample: ``[bos, image tokens, text]`` per row.

    ``text_tokens`` text positions follow the image; in training the last third of them are the
    answer (labels), the rest are masked. The instruction for the text encoder is
    ``context_tokens`` long ([CLS] ... [SEP]). Pixels and token ids are random but valid, so the
    cost is the real one for the geometry.
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(model.llava.parameters()).device
    dtype = next(model.llava.parameters()).dtype
    vocab = len(model.tokenizer)
    image_tokens = model.num_image_tokens
    first_text = 5  # the byte tokenizer's specials are 0..4 (<image> among them)
    text = torch.randint(first_text, vocab, (batch_size, text_tokens), generator=generator)
    bos = torch.full((batch_size, 1), model.tokenizer.bos_token_id)
    image = torch.full((batch_size, image_tokens), model.image_token_id)
    input_ids = torch.cat([bos, image, text], dim=1)
    vision = model.config.vision_config
    batch = {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "pixel_values": torch.randn(
            batch_size, vision.num_channels, vision.image_size, vision.image_size, generator=generator
        ).to(device=device, dtype=dtype),
    }
    if train:
        labels = torch.full_like(input_ids, -100)
        answer = max(1, text_tokens // 3)
        labels[:, -answer:] = input_ids[:, -answer:]
        batch["labels"] = labels.to(device)
    if model.needs_text:
        tokenizer = model.text_encoder.tokenizer
        body = torch.randint(
            1000, tokenizer.vocab_size, (batch_size, max(0, context_tokens - 2)), generator=generator
        )
        cls = torch.full((batch_size, 1), tokenizer.cls_token_id)
        sep = torch.full((batch_size, 1), tokenizer.sep_token_id)
        context = torch.cat([cls, body, sep], dim=1)
        batch["context_input_ids"] = context.to(device)
        batch["context_attention_mask"] = torch.ones_like(context).to(device)
    return batch
