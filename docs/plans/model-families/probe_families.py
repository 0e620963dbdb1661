"""Probe the transformers v5 classes of the new families on tiny random configs (CPU, seconds).

Prints, per family: module paths (tower, block list, MLP and its children, norms, projector /
merger, image_newline), then runs the vision path with random inputs and checks, with asserts,
how the vision tokens of each image / tile / sample are laid out inside the blocks.

Run: OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python docs/plans/model-families/probe_families.py
"""

from __future__ import annotations

import torch
from torch import nn

torch.manual_seed(0)
torch.set_num_threads(1)

TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=320,
    max_position_embeddings=512,
)


def find_paths(model: nn.Module) -> dict:
    """Attribute paths found by walking named_modules (no assumption)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(hasattr(b, "mlp") for b in module):
            if any(hasattr(b, a) for b in module for a in ("self_attn", "attn")):
                out.setdefault("block_lists", []).append((name, type(module[0]).__name__, len(module)))
    for name, param in model.named_parameters():
        if "image_newline" in name:
            out["image_newline"] = (name, tuple(param.shape))
    return out


def describe_block(block: nn.Module) -> dict:
    mlp = block.mlp
    return {
        "block_children": [n for n, _ in block.named_children()],
        "mlp_class": type(mlp).__name__,
        "mlp_children": {n: (type(m).__name__, getattr(m, "bias", None) is not None) for n, m in mlp.named_children()},
        "norm_classes": {n: type(m).__name__ for n, m in block.named_children() if "norm" in n},
    }


def tower_blocks(tower: nn.Module) -> tuple[str, nn.ModuleList]:
    """The one ModuleList of blocks with an mlp inside the tower (as covft.models.towers does)."""
    found = [(n, m) for n, m in tower.named_modules() if isinstance(m, nn.ModuleList) and len(m)
             and all(hasattr(b, "mlp") for b in m)]
    assert len(found) == 1, found
    return found[0]


def mlp_input_recorder(blocks: nn.ModuleList):
    shapes = []
    handles = [
        b.mlp.register_forward_pre_hook(lambda m, args, i=i: shapes.append((i, tuple(args[0].shape))))
        for i, b in enumerate(blocks)
    ]
    return shapes, handles


def header(title: str) -> None:
    print("\n" + "=" * 100 + f"\n{title}\n" + "=" * 100)


# --------------------------------------------------------------------------------------- LLaVA-NeXT
def probe_llava_next() -> None:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    header("LLaVA-NeXT: LlavaNextForConditionalGeneration (CLIP tower)")
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        image_size=28, patch_size=14, projection_dim=32, hidden_act="quick_gelu",
    )
    pinpoints = [[28, 56], [56, 28], [56, 56]]
    config = LlavaNextConfig(
        vision_config=vision, text_config=LlamaConfig(**TEXT), image_token_id=300,
        image_grid_pinpoints=pinpoints, vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    model = LlavaNextForConditionalGeneration(config).eval()
    tower = model.model.vision_tower
    print("top-level children:", [n for n, _ in model.named_children()], "| model.model children:",
          [n for n, _ in model.model.named_children()])
    print("tower class:", type(tower).__name__, "| paths:", find_paths(model))
    name, blocks = tower_blocks(tower)
    print("block list inside tower:", name)
    print("block 0:", describe_block(blocks[0]))
    print("projector:", model.model.multi_modal_projector)
    # two images: 28x56 (1 base + 2 tiles = 3 rows) and 56x56 (1 base + 4 tiles = 5 rows)
    sizes = torch.tensor([[28, 56], [56, 56]])
    counts = [image_size_to_num_patches(s.tolist(), pinpoints, 28) for s in sizes]
    print("image_size_to_num_patches per image:", counts)
    assert counts == [3, 5]
    pixel_values = torch.randn(2, max(counts), 3, 28, 28)  # padded 5-D, as the processor returns
    shapes, handles = mlp_input_recorder(blocks)
    with torch.no_grad():
        out = model.model.get_image_features(pixel_values, sizes, return_dict=True)
    for h in handles:
        h.remove()
    print("tower batch seen by block MLPs:", shapes[0], "-> rows = sum(counts) =", sum(counts))
    assert shapes[0][1][0] == sum(counts)
    print("features per image (incl. image_newline rows):", [tuple(f.shape) for f in out.pooler_output])
    tile_to_image = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    print("tower row -> image:", tile_to_image.tolist())


def probe_llava_next_processor() -> None:
    """The PIL image processor's pixel_values layout (padded [num_images, max_tiles, C, H, W])."""
    from PIL import Image
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    header("LLaVA-NeXT image processor (PIL backend): pixel_values layout")
    proc = LlavaNextImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
        image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]],
    )
    images = [Image.new("RGB", (56, 28), (255, 0, 0)), Image.new("RGB", (60, 60), (0, 255, 0))]
    batch = proc(images, return_tensors="pt")
    print({k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in batch.items()})
    print("image_sizes:", batch["image_sizes"].tolist())


# ---------------------------------------------------------------------------------- LLaVA-OneVision
def probe_llava_onevision() -> None:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    header("LLaVA-OneVision: LlavaOnevisionForConditionalGeneration (SigLIP tower)")
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        image_size=28, patch_size=14, vision_use_head=False,
    )
    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=Qwen2Config(**TEXT), image_token_id=300, video_token_id=301,
        image_grid_pinpoints=pinpoints,
    )
    print("config defaults: vision_feature_layer =", config.vision_feature_layer,
          "| select =", config.vision_feature_select_strategy, "| vision_aspect_ratio =", config.vision_aspect_ratio)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    tower = model.model.vision_tower
    print("tower class:", type(tower).__name__, "| paths:", find_paths(model))
    print("siglip head present:", any(n.endswith("head") for n, _ in tower.named_modules()))
    name, blocks = tower_blocks(tower)
    print("block list inside tower:", name)
    print("block 0:", describe_block(blocks[0]))
    sizes = torch.tensor([[28, 56], [56, 56], [56, 56]])
    # sample 0 has two images (no tiling for multi-image samples), sample 1 one image (tiled)
    batch_num_images = torch.tensor([2, 1])
    pixel_values = torch.randn(3, 5, 3, 28, 28)
    shapes, handles = mlp_input_recorder(blocks)
    with torch.no_grad():
        out = model.model.get_image_features(
            pixel_values, sizes, batch_num_images=batch_num_images, return_dict=True
        )
    for h in handles:
        h.remove()
    print("tower batch with batch_num_images=[2,1]:", shapes[0], "(expected 1 + 1 + 5 = 7 rows)")
    assert shapes[0][1][0] == 7
    print("features per image:", [tuple(f.shape) for f in out.pooler_output])
    shapes, handles = mlp_input_recorder(blocks)
    with torch.no_grad():
        model.model.get_image_features(pixel_values, sizes, return_dict=True)
    for h in handles:
        h.remove()
    print("same without batch_num_images (every image tiled):", shapes[0], "(3 + 5 + 5 = 13 rows)")
    assert shapes[0][1][0] == 13
    video = torch.randn(2, 3, 3, 28, 28)  # 2 videos x 3 frames
    shapes, handles = mlp_input_recorder(blocks)
    with torch.no_grad():
        v = model.model.get_video_features(video, return_dict=True)
    for h in handles:
        h.remove()
    print("video [2 videos, 3 frames]: tower batch", shapes[0], "| pooled features", tuple(v.pooler_output.shape))
    assert shapes[0][1][0] == 6


# ------------------------------------------------------------------------------------------- Qwen
def qwen_inputs(grid_thw: torch.Tensor, vision_config) -> torch.Tensor:
    patch_dim = vision_config.in_channels * vision_config.temporal_patch_size * vision_config.patch_size**2
    return torch.randn(int(grid_thw.prod(-1).sum()), patch_dim)


def check_window_index(grid_thw, config) -> None:
    from transformers.vision_utils import get_vision_attention_seqlens, get_vision_window_index

    cu, _ = get_vision_attention_seqlens(grid_thw, config)
    window_index, cu_window = get_vision_window_index(
        grid_thw, spatial_merge_size=config.spatial_merge_size, window_size=config.window_size,
        patch_size=config.patch_size,
    )
    unit = config.spatial_merge_size**2
    print("cu_seqlens:", cu.tolist(), "| cu_window_seqlens:", cu_window.tolist())
    # window_index permutes merge-units; check that every image's units stay inside its own range
    start = 0
    for i, (t, h, w) in enumerate(grid_thw.tolist()):
        n = t * h * w // unit
        seg = window_index[start : start + n]
        assert seg.min() >= start and seg.max() < start + n, f"image {i} mixes with another"
        start += n
    print("window permutation keeps each image's tokens contiguous and in image order: OK")


def probe_qwen(kind: str) -> None:
    header(f"{kind}")
    if kind == "Qwen2-VL":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model

        vision = dict(depth=4, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=14)
    elif kind == "Qwen2.5-VL":
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model

        vision = dict(
            depth=4, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64, patch_size=14,
            window_size=56, fullatt_block_indexes=[1, 3],
        )
    else:
        from transformers import Qwen3VLConfig as Config
        from transformers import Qwen3VLForConditionalGeneration as Model

        vision = dict(
            depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=16,
            num_position_embeddings=64, deepstack_visual_indexes=[0, 1, 2],
        )
    text = dict(TEXT, rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3]})
    if kind == "Qwen3-VL":
        text["head_dim"] = 16
    config = Config(vision_config=vision, text_config=text, image_token_id=300, video_token_id=301)
    model = Model(config).eval()
    visual = model.model.visual
    print("top-level children:", [n for n, _ in model.named_children()], "| model.model children:",
          [n for n, _ in model.model.named_children()])
    print("tower class:", type(visual).__name__, "| paths:", find_paths(model))
    blocks = visual.blocks
    print("block 0:", describe_block(blocks[0]))
    print("merger:", type(visual.merger).__name__, [n for n, _ in visual.merger.named_children()])
    if kind == "Qwen3-VL":
        print("deepstack_visual_indexes:", visual.deepstack_visual_indexes, "| deepstack_merger_list:",
              len(visual.deepstack_merger_list), type(visual.deepstack_merger_list[0]).__name__)
    if kind == "Qwen2.5-VL":
        print("fullatt_block_indexes:", visual.fullatt_block_indexes, "| window_size:", visual.window_size)
    unit = config.vision_config.spatial_merge_size ** 2
    side = config.vision_config.patch_size * config.vision_config.spatial_merge_size
    # image 0: 4x8 patches, image 1: 8x8 patches, video: 2 temporal x 4x4
    grid_thw = torch.tensor([[1, 4, 8], [1, 8, 8], [2, 4, 4]])
    pixel_values = qwen_inputs(grid_thw, config.vision_config)
    print(f"pixel_values {tuple(pixel_values.shape)} for grid_thw {grid_thw.tolist()} (one merged token = "
          f"{unit} patches = {side}x{side} px)")
    if kind == "Qwen2.5-VL":
        check_window_index(grid_thw, config.vision_config)
    shapes, handles = mlp_input_recorder(blocks)
    with torch.no_grad():
        out = visual(pixel_values, grid_thw=grid_thw, return_dict=True)
    for h in handles:
        h.remove()
    print("MLP input shape per block (packed, no batch dim):", shapes[:2], "...")
    assert shapes[0][1] == (int(grid_thw.prod(-1).sum()), config.vision_config.hidden_size if kind != "Qwen2-VL"
                            else config.vision_config.embed_dim)
    tokens_per_image = grid_thw.prod(-1)
    token_to_image = torch.repeat_interleave(torch.arange(len(grid_thw)), tokens_per_image)
    print("tokens per image/video:", tokens_per_image.tolist(), "| token->image head:", token_to_image[:40].tolist())
    print("merger output:", tuple(out.pooler_output.shape), "= tokens/unit:", int(tokens_per_image.sum()) // unit)
    if kind == "Qwen3-VL":
        print("deepstack features:", [tuple(f.shape) for f in out.deepstack_features])
    # the tokens of one image inside the blocks depend only on that image (no cross-image mixing)
    with torch.no_grad():
        alone = visual(pixel_values[: tokens_per_image[0]], grid_thw=grid_thw[:1], return_dict=True)
    same = torch.allclose(alone.last_hidden_state, out.last_hidden_state[: tokens_per_image[0]], atol=1e-5)
    print("image 0 encoded alone == its rows in the packed batch:", same)
    assert same


if __name__ == "__main__":
    probe_llava_next()
    probe_llava_next_processor()
    probe_llava_onevision()
    for kind in ("Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL"):
        probe_qwen(kind)
    print("\nall probes passed")
