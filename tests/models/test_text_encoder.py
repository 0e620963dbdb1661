"""The frozen text encoder's vectors computed ahead: the same vectors, shared through a file."""

from __future__ import annotations

import pytest
import torch

import covft
from covft.models.text_encoder import load_text_encoder
from tests.conftest import make_samples

TEXTS = ["What colour is the square?", "How many objects are there?", "What colour is the circle?", "Hi"]


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder("random-tiny")


def _batch(encoder, texts):
    encoded = encoder.tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def test_precomputed_vectors_are_those_encode_cls_computes(encoder):
    fresh = load_text_encoder("random-tiny")
    expected = fresh.encode_cls(*_batch(fresh, TEXTS))
    assert encoder.precompute(TEXTS + TEXTS[:2], batch_size=2) == len(TEXTS)  # distinct texts once
    assert encoder.precompute(TEXTS) == 0
    calls = []
    hook = encoder.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        got = encoder.encode_cls(*_batch(encoder, TEXTS))
    finally:
        hook.remove()
    assert calls == []  # every vector came from the pinned cache
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_vectors_round_trip_through_a_file_and_check_the_encoder(encoder, tmp_path):
    encoder.precompute(TEXTS)
    path = tmp_path / "vectors.safetensors"
    encoder.save_vectors(path)
    other = load_text_encoder("random-tiny")
    assert other.fingerprint() == encoder.fingerprint()
    assert other.load_vectors(path) == len(TEXTS)
    for text in TEXTS:
        key = other.token_ids(text)
        assert torch.equal(other._pinned[key], encoder._pinned[key])
    changed = load_text_encoder("random-tiny")
    with torch.no_grad():
        changed.model.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert changed.fingerprint() != encoder.fingerprint()
    with pytest.raises(ValueError, match="another text encoder"):
        changed.load_vectors(path)


def test_saving_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="precompute"):
        load_text_encoder("random-tiny").save_vectors(tmp_path / "empty.safetensors")


def test_covft_loads_context_vectors_and_gives_the_same_outputs(tmp_path):
    samples = make_samples()
    base = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "covft"
    )
    encoder = base.text_encoder
    encoder.precompute(["What colour is the square?", "What is it? Are you sure?"])
    path = tmp_path / "ctx.safetensors"
    encoder.save_vectors(path)
    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"),
        "covft",
        context_vectors=str(path),
    )
    assert len(model.text_encoder._pinned) == 2
    model.load_state_dict(base.state_dict())
    base.eval(), model.eval()
    batch = model.collate(samples)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base(**batch).logits)


def test_a_missing_vectors_file_only_warns(tmp_path):
    with pytest.warns(UserWarning, match="encoded on demand"):
        model = covft.apply_vft(
            covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"),
            "covft",
            context_vectors=str(tmp_path / "gone.safetensors"),
        )
    assert model.text_encoder._pinned == {}
