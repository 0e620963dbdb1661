"""Exports of the strategies that add modules (CoVFT, Q-MoE, VPT, QA-ViT): a directory that
transformers' Auto classes load with covft installed, giving covft's logits and answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import covft
from covft.cli import main
from covft.export.stock import EXAMPLE_QUESTION
from covft.export.with_covft import CovftForImageTextToText
from covft.models import families
from tests.conftest import make_samples, moved_trainable

# (family, vision tower, strategy)
CASES = [
    ("llava", "clip", "covft"),
    ("llava", "clip", "qmoe"),
    ("llava", "clip", "vpt"),
    ("llava", "clip", "qavit"),
    ("llava_next", "clip", "covft"),
    ("qwen2_5_vl", None, "covft"),
]
MAX_NEW_TOKENS = 5


def case_id(case) -> str:
    return "-".join(part for part in case if part)


def trained(family: str, tower: str | None, method: str):
    model = covft.build_model(
        "tiny-test", vision_layers=4, vision_tower=tower, seed=0, text_encoder="random-tiny", family=family
    )
    return moved_trainable(covft.apply_vft(model, method))


def export_case(root: Path, case) -> dict:
    model = trained(*case)
    name = case_id(case)
    batch = model.collate(make_samples())
    del batch["labels"]
    families.add_token_types(model.family, batch["input_ids"], model.image_token_id, batch)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    prompt = model.collate(
        [{"image": image, "conversations": [{"from": "human", "value": EXAMPLE_QUESTION}]}],
        for_generation=True,
    )
    with torch.no_grad():
        logits = model(**batch).logits
    generated = model.generate(**prompt, max_new_tokens=MAX_NEW_TOKENS)
    checkpoint, out = root / f"ckpt-{name}", root / f"out-{name}"
    model.save_pretrained(checkpoint)
    assert main(["export", str(checkpoint), str(out), "--no-progress"]) == 0
    torch.save(batch, root / f"{name}-batch.pt")
    torch.save(prompt, root / f"{name}-prompt.pt")
    return {
        "out": str(out),
        "batch": str(root / f"{name}-batch.pt"),
        "prompt": str(root / f"{name}-prompt.pt"),
        "result": str(root / f"{name}-result.pt"),
        "max_new_tokens": MAX_NEW_TOKENS,
        "covft_logits": logits,
        "covft_generated": generated,
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("with-covft")
    cases = {case_id(case): export_case(root, case) for case in CASES}
    (root / "cases.json").write_text(
        json.dumps([{k: v for k, v in c.items() if not k.startswith("covft_")} for c in cases.values()])
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(root / "modules")}  # transformers copies covft_hf.py there
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("covft_load.py")), str(root / "cases.json")],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Do you wish to run the custom code" not in done.stdout + done.stderr
    for case in cases.values():
        case["loaded"] = torch.load(case["result"])
    return cases


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_auto_classes_load_the_export_with_covfts_logits_and_answers(exported, case):
    result = exported[case_id(case)]
    loaded = result["loaded"]
    assert loaded["class"] == "CovftModel" and loaded["strategy"] == case[2]
    torch.testing.assert_close(loaded["logits"], result["covft_logits"], rtol=0, atol=1e-4)
    assert torch.equal(loaded["generated"], result["covft_generated"])


def test_the_export_is_a_covft_checkpoint_with_what_the_auto_classes_need(exported):
    out = Path(exported["llava-clip-covft"]["out"])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "covft" and config["strategy"] == "covft"
    assert config["base_model_type"] == "llava"
    assert config["auto_map"] == {
        "AutoConfig": "covft_hf.CovftConfig",
        "AutoModelForImageTextToText": "covft_hf.CovftForImageTextToText",
    }
    assert "from covft.export.with_covft import" in (out / "covft_hf.py").read_text()
    assert "trust_remote_code=True" in (out / "README.md").read_text()
    model = covft.load_pretrained(out)  # also a covft checkpoint, with every weight
    assert model.strategy.name == "covft"
    batch = torch.load(exported["llava-clip-covft"]["batch"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, exported["llava-clip-covft"]["covft_logits"])


def test_cli_says_how_to_load_it_and_stock_only_refuses(tmp_path, capsys):
    model = trained("llava", "clip", "vpt")
    model.save_pretrained(tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "trust_remote_code=True" in out and "with covft installed" in out
    status = main(
        ["export", str(tmp_path / "ckpt"), str(tmp_path / "stock"), "--no-progress", "--stock-only"]
    )
    err = capsys.readouterr().err
    assert status == 1 and "strategy 'vpt' cannot be exported to a stock transformers model" in err
    assert "learned prompt tokens" in err and not (tmp_path / "stock").exists()


def test_loading_options_that_do_not_apply_are_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match="quantization_config"):
        CovftForImageTextToText.from_pretrained(tmp_path, quantization_config={"load_in_4bit": True})
    with pytest.raises(TypeError, match="one device"):
        CovftForImageTextToText.from_pretrained(tmp_path, device_map={"": 0, "lm_head": 1})


def test_a_hub_repository_is_downloaded_with_the_revision_asked_for(exported, monkeypatch):
    import huggingface_hub

    calls = []
    out = exported["llava-clip-vpt"]["out"]

    def snapshot_download(**kwargs):
        calls.append(kwargs)
        return out

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model = CovftForImageTextToText.from_pretrained("me/llava-vpt", revision="abc", dtype=torch.float64)
    assert calls == [{"repo_id": "me/llava-vpt", "revision": "abc"}]
    assert model.strategy.name == "vpt" and next(model.llava.parameters()).dtype == torch.float64


def test_a_dtype_asked_for_builds_the_model_in_it_with_float32_rotary_buffers(tmp_path):
    """As transformers' ``from_pretrained(..., dtype=torch.bfloat16)``: weights in bf16, the rotary
    buffers (which no checkpoint holds) in float32; casting them too changed every position's angle."""
    from covft.export import export_model
    from covft.models import precision

    model = trained("llava", "clip", "covft")
    batch = model.collate(make_samples())
    export_model(model, tmp_path / "out")
    loaded = CovftForImageTextToText.from_pretrained(tmp_path / "out", dtype=torch.bfloat16).eval()
    precision.cast(model.llava, torch.bfloat16)  # the same weights in bf16, rotary buffers as they were
    assert precision.dtype_of(loaded.llava) == torch.bfloat16
    buffers = {n: b for n, b in loaded.llava.named_buffers() if n.endswith("inv_freq")}
    assert len(buffers) == 2 and all(b.dtype == torch.float32 for b in buffers.values())
    assert all(torch.equal(b, model.llava.get_buffer(n)) for n, b in buffers.items())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
