"""Export round trip: every architecture-keeping strategy, trained, saved by covft, exported with
`covft export`, loaded by transformers alone in another process, gives covft's logits."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import covft
from covft.cli import main
from covft.export.stock import EXAMPLE_QUESTION, example_prompt
from covft.models import families
from tests.conftest import make_samples

STOCK = ["freeze", "full", "lora", "dora", "bitfit", "selective"]
# (tower, method, delta checkpoint); tower "next": a LLaVA-NeXT (CLIP tower, anyres tiles), "ov": a
# LLaVA-OneVision, "qwen": a Qwen2.5-VL (packed patches). covft holds OneVision's and Qwen's
# processors without their video processors (torchvision is not installed), so their stock side
# generates from covft's prompt inputs instead of AutoProcessor's.
FAMILY = {"next": ("llava_next", "clip"), "ov": ("llava_onevision", "siglip"), "qwen": ("qwen2_5_vl", None)}
NO_STOCK_PROCESSOR = {"ov", "qwen"}
# "+llm-lora": the LLM trained through LoRA adapters (llm_lora_r) beside the vision strategy
CASES = (
    [(tower, method, False) for tower in ("clip", "siglip") for method in STOCK]
    + [
        ("clip", "lora", True),
        ("next", "full", False),
        ("next", "lora", False),
        ("ov", "full", False),
        ("ov", "lora", False),
        ("qwen", "full", False),
        ("qwen", "lora", False),
        ("clip", "freeze+llm-lora", False),
        ("clip", "lora+llm-lora", False),
    ]
    + ([("clip", "freeze+qlora", False)] if importlib.util.find_spec("bitsandbytes") else [])
)
TOLERANCE = 1e-4
MAX_NEW_TOKENS = 6


def case_id(case) -> str:
    tower, method, delta = case
    return f"{tower}-{method}" + ("-delta" if delta else "")


def train_and_export(root: Path, tower: str, method: str, delta: bool) -> dict:
    """Build, "train" (move every trainable weight), save, export; what the stock side must match."""
    family, vision_tower = FAMILY.get(tower, ("llava", tower))
    model = covft.build_model(
        "tiny-test",
        vision_layers=4,
        vision_tower=vision_tower,
        seed=0,
        text_encoder="random-tiny",
        family=family,
    )
    vision_method, _, llm_side = method.partition("+")
    llm_options = {"llm-lora": {"llm_lora_r": 4}, "qlora": {"llm_lora_r": 4, "llm_quantization": "nf4"}}
    covft.apply_vft(model, vision_method, **llm_options.get(llm_side, {}))
    model.eval()
    batch = model.collate(make_samples())
    del batch["labels"]
    families.add_token_types(model.family, batch["input_ids"], model.image_token_id, batch)
    with torch.no_grad():
        untrained = model(**batch).logits
        torch.manual_seed(1)
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
        logits = model(**batch).logits
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    prompt_inputs = model.collate(
        [{"image": image, "conversations": [{"from": "human", "value": EXAMPLE_QUESTION}]}],
        for_generation=True,
    )
    generated = model.generate(**prompt_inputs, max_new_tokens=MAX_NEW_TOKENS)
    families.add_token_types(model.family, prompt_inputs["input_ids"], model.image_token_id, prompt_inputs)
    name = case_id((tower, method, delta))
    checkpoint, out = root / f"ckpt-{name}", root / f"out-{name}"
    model.save_pretrained(checkpoint, delta=delta)
    assert main(["export", str(checkpoint), str(out), "--no-progress"]) == 0
    image.save(root / f"{name}.png")
    torch.save(batch, root / f"{name}-batch.pt")
    if tower in NO_STOCK_PROCESSOR:
        torch.save(
            {k: v for k, v in prompt_inputs.items() if not k.startswith("context_")},
            root / f"{name}-prompt.pt",
        )
    return {
        "out": str(out),
        "batch": str(root / f"{name}-batch.pt"),
        "image": str(root / f"{name}.png"),
        "prompt": example_prompt(model),
        "result": str(root / f"{name}-result.pt"),
        "max_new_tokens": MAX_NEW_TOKENS,
        "prompt_inputs": str(root / f"{name}-prompt.pt") if tower in NO_STOCK_PROCESSOR else None,
        "covft_logits": logits,
        "covft_untrained_logits": untrained,
        "covft_input_ids": prompt_inputs["input_ids"],
        "covft_pixel_values": prompt_inputs["pixel_values"],
        "covft_generated": generated,
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, dict]:
    """Every case exported, then loaded by one process that cannot import covft."""
    root = tmp_path_factory.mktemp("export")
    cases = {case_id(case): train_and_export(root, *case) for case in CASES}
    stock_side = [{k: v for k, v in c.items() if not k.startswith("covft_")} for c in cases.values()]
    (root / "cases.json").write_text(json.dumps(stock_side))
    script = Path(__file__).with_name("stock_load.py")
    done = subprocess.run(
        [sys.executable, str(script), str(root / "cases.json")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for case in cases.values():
        case["stock"] = torch.load(case["result"])
    return cases


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_transformers_alone_gives_covfts_logits(exported, case):
    result = exported[case_id(case)]
    stock = result["stock"]
    expected = {
        "next": "LlavaNextForConditionalGeneration",
        "ov": "LlavaOnevisionForConditionalGeneration",
        "qwen": "Qwen2_5_VLForConditionalGeneration",
    }.get(case[0], "LlavaForConditionalGeneration")
    assert stock["class"] == expected
    difference = (stock["logits"] - result["covft_logits"]).abs().max().item()
    moved = (result["covft_logits"] - result["covft_untrained_logits"]).abs().max().item()
    print(f"{case_id(case)}: max |logit difference| {difference:.2e} (training moved logits by {moved:.2e})")
    assert difference <= TOLERANCE
    assert moved > 100 * TOLERANCE  # the weights export has to carry matter


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_stock_processor_and_generate_give_covfts_inputs_and_answer(exported, case):
    """The exported processor expands <image> and preprocesses the image as covft's collator, and
    greedy generation (the saved generation config) answers as covft's generate."""
    result = exported[case_id(case)]
    assert torch.equal(result["stock"]["input_ids"], result["covft_input_ids"])
    torch.testing.assert_close(result["stock"]["pixel_values"], result["covft_pixel_values"])
    assert torch.equal(result["stock"]["generated"], result["covft_generated"])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_export_holds_exactly_the_stock_weights(exported, case):
    """No adapter or covft tensor is left over and none is missing (from_pretrained only warns)."""
    result = exported[case_id(case)]
    assert all(not names for names in result["stock"]["loading"].values()), result["stock"]["loading"]
    card = (Path(result["out"]) / "README.md").read_text()
    assert f'from_pretrained("{result["out"]}")' in card
    assert ("merged" if case[1].split("+")[0] in ("lora", "dora") else "nothing to fold") in card
    assert ("merged LoRA into 14 LLM linear layers" in card) == ("+" in case[1])
    assert ("dequantized from 4 bits: 14" in card) == case[1].endswith("+qlora")
