"""PEFT targeting on the new families (tiny random configs): LLM-only LoRA without leaks.

1. Bare suffixes (LLaMA-Factory/LLaVA style ``target_modules=[q_proj, ..., gate_proj, up_proj,
   down_proj]``) adapt the vision MLP of Qwen2.5-VL too (its vision blocks have gate/up/down_proj).
2. One anchored regular expression per family adapts only the LLM's decoder layers.
3. A vision adapter (covft's LoRA strategy: ``LoraModel(model, cfg, adapter_name=...)``) and an LLM
   adapter under another name coexist: both sets train, merge_and_unload folds both.

Run: OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python docs/plans/model-families/peft_targets.py
"""

from __future__ import annotations

import torch

torch.manual_seed(0)
torch.set_num_threads(1)

TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=320, max_position_embeddings=512)
LLM_REGEX = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def qwen25():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64),
        text_config=dict(TEXT, rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3]}),
        image_token_id=300, video_token_id=301))


def qwen3():
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration(Qwen3VLConfig(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                           patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=[0]),
        text_config=dict(TEXT, head_dim=16, rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3]}),
        image_token_id=300, video_token_id=301))


def llava_ov():
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, SiglipVisionConfig

    return LlavaOnevisionForConditionalGeneration(LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=28, patch_size=14),
        text_config=dict(TEXT, model_type="qwen2"), image_token_id=300, video_token_id=301))


def adapted(model) -> list[str]:
    return sorted({n.rsplit(".lora_A", 1)[0] for n, _ in model.named_modules() if n.endswith("lora_A")})


def main() -> None:
    from peft import LoraConfig, LoraModel

    bare = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for name, build in (("qwen2.5-vl", qwen25), ("qwen3-vl", qwen3), ("llava-onevision", llava_ov)):
        model = build()
        LoraModel(model, LoraConfig(r=4, target_modules=bare), adapter_name="llm")
        leaked = [n for n in adapted(model) if not n.startswith("model.language_model.")]
        print(f"{name}: bare suffixes adapt {len(adapted(model))} modules, outside the LLM: {leaked}")

        model = build()
        LoraModel(model, LoraConfig(r=4, target_modules=LLM_REGEX), adapter_name="llm")
        names = adapted(model)
        assert names and all(n.startswith("model.language_model.layers.") for n in names), names
        print(f"{name}: anchored regex adapts {len(names)} modules, all in model.language_model.layers")

    # vision adapter + LLM adapter on one Qwen2.5-VL, as covft would stack them
    model = qwen25()
    vision_regex = r"model\.visual\.blocks\.\d+\.attn\.(qkv|proj)"
    LoraModel(model, LoraConfig(r=4, target_modules=vision_regex), adapter_name="vision")
    LoraModel(model, LoraConfig(r=4, target_modules=LLM_REGEX), adapter_name="llm")
    lora_params = [n for n, p in model.named_parameters() if ".lora_" in n]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    print("vision+llm adapters:", len(lora_params), "LoRA tensors;",
          "vision:", sum(".visual." in n for n in lora_params), "llm:", sum(".language_model." in n for n in lora_params))
    print("requires_grad after two LoraModel calls (PEFT freezes the base):", len(trainable),
          "all LoRA:", all(".lora_" in n for n in trainable))
    from peft.tuners.lora import LoraLayer

    active = {tuple(m.active_adapters) for m in model.modules() if isinstance(m, LoraLayer)}
    print("active adapters per LoRA layer after the second LoraModel:", active,
          "-> the vision adapter is silently OFF")
    vision_layers = [m for n, m in model.named_modules() if isinstance(m, LoraLayer) and ".visual." in n]
    assert all("llm" in m.active_adapters and "vision" not in m.active_adapters for m in vision_layers)
    for m in model.modules():
        if isinstance(m, LoraLayer):
            m.set_adapter(["vision", "llm"])  # layers skip adapters they do not hold
    active = {tuple(m.active_adapters) for m in model.modules() if isinstance(m, LoraLayer)}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    print("after set_adapter(['vision','llm']) on every LoRA layer:", active, "| trainable LoRA tensors:",
          len(trainable))
    assert len(trainable) == len(lora_params)
    # the vision adapter now changes the tower's output (B is zero at init: perturb it first)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".visual." in n and "lora_B" in n:
                p.normal_()
    grid = torch.tensor([[1, 4, 4]])
    pixels = torch.randn(16, 3 * 2 * 14 * 14)
    with torch.no_grad():
        on = model.model.visual(pixels, grid_thw=grid).last_hidden_state
        for m in vision_layers:
            m.set_adapter(["llm"])
        off = model.model.visual(pixels, grid_thw=grid).last_hidden_state
    print("vision adapter active vs not, max |diff| of tower output:", float((on - off).abs().max()))
    assert float((on - off).abs().max()) > 1e-4

    # the alternative: one adapter, one union regex, per-part rank through rank_pattern/alpha_pattern
    model = qwen25()
    config = LoraConfig(r=8, lora_alpha=16, target_modules=f"({vision_regex})|({LLM_REGEX})",
                        rank_pattern={r"^model\.language_model\..*": 64}, alpha_pattern={r"^model\.language_model\..*": 128})
    LoraModel(model, config, adapter_name="default")
    ranks = {n.split(".lora_A")[0].split(".")[1]: m.weight.shape[0] for n, m in model.named_modules()
             if n.endswith("lora_A.default")}
    print("one adapter with rank_pattern: rank by part:", ranks)


if __name__ == "__main__":
    main()
