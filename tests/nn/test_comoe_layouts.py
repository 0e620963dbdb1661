"""CoMoE upcycles the vision MLPs of every family: Qwen2-VL's fc1/act/fc2, Qwen3-VL's linear_fc1/act_fn/linear_fc2."""

from __future__ import annotations

import pytest
import torch

from covft.nn.comoe import ContextualMoE
from covft.nn.context import ContextState
from covft.nn.experts import FusedExperts

B, N, D, T_DIM = 2, 5, 16, 12


def _qwen2_vl_mlp():
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLVisionBlock

    config = Qwen2VLConfig(vision_config=dict(depth=1, embed_dim=D, num_heads=4, mlp_ratio=2)).vision_config
    return Qwen2VLVisionBlock(config).mlp


def _qwen3_vl_mlp():
    from transformers import Qwen3VLConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionBlock

    config = Qwen3VLConfig(vision_config=dict(depth=1, hidden_size=D, intermediate_size=24, num_heads=4))
    return Qwen3VLVisionBlock(config.vision_config).mlp


@pytest.mark.parametrize("make", [_qwen2_vl_mlp, _qwen3_vl_mlp], ids=["qwen2_vl", "qwen3_vl"])
def test_from_mlp_upcycles_the_qwen_vision_mlps_exactly(make):
    torch.manual_seed(0)
    mlp = make()
    moe = ContextualMoE.from_mlp(mlp, ContextState(text=torch.randn(B, T_DIM)), T_DIM)
    assert isinstance(moe.experts, FusedExperts)
    z = torch.randn(B, N, D)
    torch.testing.assert_close(moe(z), mlp(z), atol=1e-5, rtol=1e-5)


def test_an_unknown_mlp_layout_is_named():
    with pytest.raises(ValueError, match="Sequential lacks.*linear_fc1"):
        ContextualMoE.from_mlp(torch.nn.Sequential(), ContextState(), T_DIM)
