"""The tiny preset's tokenizer: byte-level BPE trained on a world's text, cached by what it was trained on."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from covft.models.tokenizer import SPECIAL_TOKENS
from covft.recipes.demo.cache import default_cache_dir
from covft.utils import atomic_directory

#: A compact chat format for the tiny LM (no long system prompt: every token costs CPU time).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'USER: ' + message['content'] + '\\n' }}"
    "{% else %}{{ 'ASSISTANT: ' + message['content'] + eos_token + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
TOKENIZER_VERSION = "1"


def world_texts(world_dir: str | os.PathLike) -> Iterator[str]:
    """Every training text of a world: conversation turns of train.json, the captions and the dense
    captions (when the world has them).

    The held-out suite is not read: its questions use the same closed vocabulary.
    """
    world = Path(world_dir)
    for name in ("train.json", "captions.json", "dense_captions.json"):
        if not (world / name).is_file():
            continue
        for record in json.loads((world / name).read_text(encoding="utf-8")):
            for turn in record["conversations"]:
                yield turn["value"].replace("<image>", " ")


def world_tokenizer(
    world_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None, vocab_size: int = 1024
) -> Path:
    """Train (or reuse) a byte-level BPE tokenizer on a world's text; returns its directory.

    Cached under ``<cache_dir>/tokenizer/<hash>/`` where the hash covers the corpus and the
    vocabulary size, so a different world gets its own tokenizer.
    """
    texts = list(world_texts(world_dir))
    digest = hashlib.sha256(f"{TOKENIZER_VERSION}|{vocab_size}|".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "tokenizer" / digest.hexdigest()[:16]
    if (target / "tokenizer.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from covft.models.tokenizer import wrap as wrap_tokenizer

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    prompts = ["USER: ", "ASSISTANT: ", "ASSISTANT:"]
    backend.train_from_iterator(texts + prompts, trainer=trainer)
    tokenizer = wrap_tokenizer(backend)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    with atomic_directory(target, keep_existing=True) as tmp:  # a concurrent run that finished first wins
        tokenizer.save_pretrained(str(tmp))
    return target


def load_tokenizer(tokenizer_dir: str | None):
    """The tokenizer in ``tokenizer_dir`` (from :func:`world_tokenizer`), or the byte-level fallback
    with the tiny chat template when None (tests)."""
    from transformers import AutoTokenizer

    from covft.models.tokenizer import byte_tokenizer

    if tokenizer_dir is None:
        tokenizer = byte_tokenizer()
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
        return tokenizer
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))
