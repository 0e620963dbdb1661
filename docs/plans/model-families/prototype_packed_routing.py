"""Prototype (not project code): per-sample CoMoE routing inside Qwen2.5-VL's packed vision blocks.

Shows that the plumbing plan.md proposes works on transformers 5.24:
- a forward pre-hook (with_kwargs) on ``model.model.visual`` reads ``grid_thw`` and builds the
  token -> sample map from the images-per-sample list that the collator knows;
- the block MLP (``Qwen2_5_VLMLP``, SwiGLU) is swapped for a packed mixture that reuses covft's
  ``FusedSwiGLUExperts`` unchanged (one call per sample here; plan.md proposes a segment-index
  argument to the fused kernel instead);
- at initialisation (identical upcycled experts, gates summing to 1) the tower's output is exactly
  the stock one, whatever the gates;
- after perturbing the experts, changing sample 0's gates changes only sample 0's tokens (the
  window permutation never moves a token across images, so routing stays per sample).
It also runs the whole Qwen2_5_VLForConditionalGeneration forward to show that the hook fires
inside the stock model forward (image tokens in input_ids, image_grid_thw passed as usual).

Run: OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python docs/plans/model-families/prototype_packed_routing.py
"""

from __future__ import annotations

import sys

import torch
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "src"))
from covft.nn.experts import FusedSwiGLUExperts  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)
EXPERTS = 4


class Layout:
    """What the family hook writes before the tower runs: token -> sample, and the gates."""

    token_to_sample: torch.Tensor | None = None
    gates: torch.Tensor | None = None  # [S, E], stands in for router(CVE(z, t)) per sample


class PackedMoE(nn.Module):
    def __init__(self, mlp: nn.Module, layout: Layout) -> None:
        super().__init__()
        self.layout = layout
        self.experts = FusedSwiGLUExperts.from_linear(mlp.gate_proj, mlp.up_proj, mlp.down_proj, mlp.act_fn, EXPERTS)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [T, d], packed
        owner = self.layout.token_to_sample
        assert owner is not None and owner.shape[0] == hidden.shape[0], "layout not set for this pass"
        out = torch.empty_like(hidden)
        for s in owner.unique().tolist():
            rows = owner == s
            out[rows] = self.experts(hidden[rows].unsqueeze(0), self.layout.gates[s : s + 1])[0]
        return out


def main() -> None:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64,
                           patch_size=14, window_size=56, fullatt_block_indexes=[1, 3]),
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=320, max_position_embeddings=512,
                         rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3]}),
        image_token_id=300, video_token_id=301, vision_start_token_id=302, vision_end_token_id=303,
    )
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    visual = model.model.visual
    grid_thw = torch.tensor([[1, 4, 8], [1, 8, 8], [1, 4, 4]])
    images_per_sample = [2, 1]  # sample 0 has images 0 and 1, sample 1 has image 2
    patch_dim = 3 * 2 * 14 * 14
    pixel_values = torch.randn(int(grid_thw.prod(-1).sum()), patch_dim)
    with torch.no_grad():
        stock = visual(pixel_values, grid_thw=grid_thw, return_dict=True).last_hidden_state

    layout = Layout()
    image_to_sample = torch.repeat_interleave(torch.arange(len(images_per_sample)), torch.tensor(images_per_sample))

    def set_layout(module, args, kwargs):
        grid = kwargs["grid_thw"]
        layout.token_to_sample = torch.repeat_interleave(image_to_sample, grid.prod(-1))

    visual.register_forward_pre_hook(set_layout, with_kwargs=True)
    for index in (2, 3):  # second half of the 4 feeding blocks
        visual.blocks[index].mlp = PackedMoE(visual.blocks[index].mlp, layout)
    layout.gates = torch.softmax(torch.randn(2, EXPERTS), -1)
    with torch.no_grad():
        routed = visual(pixel_values, grid_thw=grid_thw, return_dict=True).last_hidden_state
    print("identity at init (max |diff|):", float((routed - stock).abs().max()))
    assert torch.allclose(routed, stock, atol=1e-5)

    with torch.no_grad():
        for index in (2, 3):
            for p in visual.blocks[index].mlp.experts.parameters():
                p.add_(0.05 * torch.randn_like(p))
        before = visual(pixel_values, grid_thw=grid_thw, return_dict=True).last_hidden_state
        layout.gates = layout.gates.clone()
        layout.gates[0] = torch.tensor([0.97, 0.01, 0.01, 0.01])
        after = visual(pixel_values, grid_thw=grid_thw, return_dict=True).last_hidden_state
    n0 = int(grid_thw[:2].prod(-1).sum())
    changed0 = float((after[:n0] - before[:n0]).abs().max())
    changed1 = float((after[n0:] - before[n0:]).abs().max())
    print(f"after changing sample 0's gates: sample 0 tokens moved by {changed0:.3e}, sample 1 by {changed1:.3e}")
    assert changed0 > 1e-4 and changed1 == 0.0

    # the hook fires inside the stock model forward
    merged = (grid_thw.prod(-1) // 4).tolist()
    rows = []
    for sample, images in enumerate([[0, 1], [2]]):
        ids = [1, 2]
        for i in images:
            ids += [302] + [300] * merged[i] + [303]
        rows.append(ids + [5, 6, 7])
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    layout.token_to_sample = None
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention, pixel_values=pixel_values, image_grid_thw=grid_thw)
    print("full model forward:", tuple(out.logits.shape), "| layout set by the hook:",
          layout.token_to_sample is not None and layout.token_to_sample.bincount().tolist())
    assert layout.token_to_sample.bincount().tolist() == [96, 16]
    print("prototype OK")


if __name__ == "__main__":
    main()
