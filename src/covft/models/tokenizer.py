"""A byte-level tokenizer built in-process, for presets that have no pretrained tokenizer."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

QWEN_VISION_TOKENS = {
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
}
"""The special tokens Qwen-VL processors and models look for (attribute -> token)."""


def byte_tokenizer(extra: dict[str, str] | None = None):
    """Every byte is a token (no merges): deterministic, offline, small (261 ids).

    ``extra`` (attribute -> token, e.g. :data:`QWEN_VISION_TOKENS`) adds special tokens after the
    bytes, so the ids of the others never move; an ``image_token`` there replaces ``<image>`` as
    the tokenizer's ``image_token``.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    for token in (extra or {}).values():
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return wrap(backend, extra)


def wrap(backend: Tokenizer, extra: dict[str, str] | None = None):
    """A transformers tokenizer around a ``tokenizers`` backend that has :data:`SPECIAL_TOKENS`."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>", **(extra or {})},
    )
