"""Parameter counts per part for the real checkpoints' geometry, built on the meta device.

1. Reproduces covft's 529,007,664 (llava-1.5-7b, CoVFT stage 2) with covft's own code (read only
   from the checkout's src), then with this script's standalone method, to show they agree.
2. For every preset geometry: total, vision / projector(merger) / LLM, the CoVFT trainable vision
   count (E=4 upcycled experts in the second half of the feeding blocks, CVE with bert-base d_t=768,
   router, every block's two norms), and the stage-2 trainable total (+ projector + LLM).

The CVE / router sizes come from covft.nn modules instantiated on the meta device; the experts
are E copies of the block's MLP (what upcycling makes, whatever the MLP layout).

Run: OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python docs/plans/model-families/count_parameters.py
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "src"))

TEXT_DIM = 768  # bert-base-uncased, the paper's text encoder
EXPERTS = 4

CLIP_L_336 = dict(
    model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
    num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
)
SIGLIP_SO400M_26 = dict(  # convert_llava_onevision_weights_to_hf.py: 27-layer so400m minus its last layer
    model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
    num_attention_heads=16, image_size=384, patch_size=14, vision_use_head=False,
)


def llama(hidden, layers, heads, kv, inter, vocab, tie=False, model_type="llama"):
    return dict(model_type=model_type, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tie)


# Geometry of each preset; sources are listed in plan.md section 3.
PRESETS = {
    "llava-1.5-7b": ("llava", dict(vision_config=CLIP_L_336, text_config=llama(4096, 32, 32, 32, 11008, 32064))),
    "llava-1.5-13b": ("llava", dict(vision_config=CLIP_L_336, text_config=llama(5120, 40, 40, 40, 13824, 32064))),
    "llava-next-7b (vicuna)": (
        "llava_next", dict(vision_config=CLIP_L_336, text_config=llama(4096, 32, 32, 32, 11008, 32064))),
    "llava-next-7b (mistral)": (
        "llava_next",
        dict(vision_config=CLIP_L_336, text_config=llama(4096, 32, 32, 8, 14336, 32064, model_type="mistral"))),
    "llava-ov-0.5b": (
        "llava_onevision",
        dict(vision_config=SIGLIP_SO400M_26, text_config=llama(896, 24, 14, 2, 4864, 152000, True, "qwen2"))),
    "llava-ov-7b": (
        "llava_onevision",
        dict(vision_config=SIGLIP_SO400M_26, text_config=llama(3584, 28, 28, 4, 18944, 152128, False, "qwen2"))),
    "qwen2-vl-7b": (
        "qwen2_vl",
        dict(vision_config=dict(depth=32, embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, patch_size=14),
             text_config=llama(3584, 28, 28, 4, 18944, 152064, False, "qwen2_vl_text"))),
    "qwen2.5-vl-3b": (
        "qwen2_5_vl",
        dict(vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                                patch_size=14, window_size=112, fullatt_block_indexes=[7, 15, 23, 31]),
             text_config=llama(2048, 36, 16, 2, 11008, 151936, True, "qwen2_5_vl_text"))),
    "qwen2.5-vl-7b": (
        "qwen2_5_vl",
        dict(vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                                patch_size=14, window_size=112, fullatt_block_indexes=[7, 15, 23, 31]),
             text_config=llama(3584, 28, 28, 4, 18944, 152064, False, "qwen2_5_vl_text"))),
    "qwen3-vl-2b": (
        "qwen3_vl",
        dict(vision_config=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                                patch_size=16, num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17]),
             text_config=dict(llama(2048, 28, 16, 8, 6144, 151936, True, "qwen3_vl_text"), head_dim=128))),
    "qwen3-vl-8b": (
        "qwen3_vl",
        dict(vision_config=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                                patch_size=16, num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24]),
             text_config=dict(llama(4096, 36, 32, 8, 12288, 151936, False, "qwen3_vl_text"), head_dim=128))),
}

FAMILY = {  # config class, model class
    "llava": ("LlavaConfig", "LlavaForConditionalGeneration"),
    "llava_next": ("LlavaNextConfig", "LlavaNextForConditionalGeneration"),
    "llava_onevision": ("LlavaOnevisionConfig", "LlavaOnevisionForConditionalGeneration"),
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration"),
}


def build(family: str, kwargs: dict) -> nn.Module:
    import transformers

    config_cls, model_cls = (getattr(transformers, n) for n in FAMILY[family])
    extra = {}
    if family.startswith("llava"):
        extra = dict(vision_feature_layer=-2 if family != "llava_onevision" else -1,
                     vision_feature_select_strategy="default" if family != "llava_onevision" else "full")
        if kwargs["text_config"].get("tie_word_embeddings"):
            extra["tie_word_embeddings"] = True
    else:
        extra["tie_word_embeddings"] = kwargs["text_config"].get("tie_word_embeddings", False)
    config = config_cls(**kwargs, **extra)
    with torch.device("meta"):
        return model_cls._from_config(config)


def part_of(name: str) -> str:
    if name.startswith("model.vision_tower."):
        return "vision"
    if name.startswith(("model.visual.merger.", "model.visual.deepstack_merger_list.")):
        return "projector"
    if name.startswith("model.visual."):
        return "vision"
    if name.startswith(("model.multi_modal_projector.", "model.image_newline")):
        return "projector"
    return "llm"


def blocks_of(model: nn.Module) -> nn.ModuleList:
    tower = model.model.vision_tower if hasattr(model.model, "vision_tower") else model.model.visual
    lists = [m for _, m in tower.named_modules() if isinstance(m, nn.ModuleList) and len(m)
             and all(hasattr(b, "mlp") for b in m)]
    assert len(lists) == 1
    return lists[0]


def feeding_blocks(model: nn.Module, family: str) -> int:
    depth = len(blocks_of(model))
    if family.startswith("llava"):
        layer = model.config.vision_feature_layer
        return depth + 1 + layer if layer < 0 else layer
    return depth  # Qwen: the merger reads the last block's output, so every block feeds the LLM


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def covft_vision_trainable(model: nn.Module, family: str) -> dict:
    from covft.nn.cve import ContextVectorExtractor

    blocks = blocks_of(model)
    feeding = feeding_blocks(model, family)
    comoe = list(range(feeding // 2, feeding))
    dim = blocks[0].norm2.weight.shape[0] if hasattr(blocks[0], "norm2") else blocks[0].layer_norm2.weight.shape[0]
    with torch.device("meta"):
        cve = numel(ContextVectorExtractor(dim, TEXT_DIM, num_heads=4))
        router = numel(nn.Linear(TEXT_DIM, EXPERTS))
    per_block = {i: EXPERTS * numel(blocks[i].mlp) + cve + router for i in comoe}
    norms = sum(numel(m) for b in blocks for n, m in b.named_children() if "norm" in n)
    return {
        "depth": len(blocks),
        "feeding": feeding,
        "comoe_blocks": f"{comoe[0]}..{comoe[-1]} ({len(comoe)})",
        "mlp_params": numel(blocks[comoe[0]].mlp),
        "cve": cve,
        "router": router,
        "per_comoe_block": per_block[comoe[0]],
        "norms_all_blocks": norms,
        "covft_vision_trainable": sum(per_block.values()) + norms,
    }


def count(name: str) -> dict:
    family, kwargs = PRESETS[name]
    model = build(family, kwargs)
    parts = {"vision": 0, "projector": 0, "llm": 0}
    for n, p in model.named_parameters():  # named_parameters dedups tied weights
        parts[part_of(n)] += p.numel()
    row = {"preset": name, "class": type(model).__name__, "total": sum(parts.values()), **parts}
    row.update(covft_vision_trainable(model, family))
    row["stage2_trainable_covft"] = row["covft_vision_trainable"] + row["projector"] + row["llm"]
    row["tied"] = model.lm_head.weight is model.get_input_embeddings().weight
    return row


def covft_reference() -> int:
    """covft's own count for llava-1.5-7b (what tests/strategies/test_covft.py pins)."""
    import covft

    model = covft.build_model("llava-1.5-7b", device="meta")
    covft.apply_vft(model, "covft")
    return model.num_parameters("vision", trainable=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    reference = covft_reference()
    print("covft's own llava-1.5-7b CoVFT trainable vision count:", f"{reference:,}")
    rows = [count(name) for name in PRESETS]
    assert rows[0]["covft_vision_trainable"] == reference == 529_007_664, rows[0]
    print("standalone method reproduces it: OK\n")
    cols = ["preset", "total", "vision", "projector", "llm", "tied", "depth", "feeding", "comoe_blocks",
            "mlp_params", "per_comoe_block", "norms_all_blocks", "covft_vision_trainable", "stage2_trainable_covft"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:,}" if isinstance(r[c], int) and not isinstance(r[c], bool) else str(r[c])
                                 for c in cols) + " |")
    with open("count_parameters.json", "w") as f:
        json.dump(rows, f, indent=1)
