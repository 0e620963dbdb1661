import math

import pytest
import torch
from torch import nn

from covft.nn import ContextState, PostNormResidualBlock, QuickGELU


def test_quick_gelu_matches_formula():
    x = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    expected = torch.tensor([v * (1.0 / (1.0 + math.exp(-1.702 * v))) for v in x.tolist()])
    torch.testing.assert_close(QuickGELU()(x), expected)
    assert QuickGELU()(torch.tensor([1.0])).item() == pytest.approx(0.8457958, abs=1e-6)


def test_post_norm_residual_block_is_ln_of_x_plus_mlp():
    torch.manual_seed(0)
    block = PostNormResidualBlock(6)
    assert block.fc1.weight.shape == (12, 6) and block.fc2.weight.shape == (6, 12)
    assert isinstance(block.act, QuickGELU)
    x = torch.randn(3, 4, 6)
    inner = x + block.fc2(block.act(block.fc1(x)))
    expected = nn.functional.layer_norm(inner, (6,), block.norm.weight, block.norm.bias, block.norm.eps)
    torch.testing.assert_close(block(x), expected)
    assert block(torch.randn(2, 6)).shape == (2, 6)


def test_post_norm_residual_block_options_and_parameter_count():
    block = PostNormResidualBlock(8, act_layer=nn.GELU, expansion=3)
    assert isinstance(block.act, nn.GELU)
    assert block.fc1.out_features == 24
    # W1 (8*24 + 24) + W2 (24*8 + 8) + LayerNorm (2*8)
    assert sum(p.numel() for p in block.parameters()) == 8 * 24 + 24 + 24 * 8 + 8 + 16
    with pytest.raises(ValueError, match="positive"):
        PostNormResidualBlock(0)


def test_context_state_clear_drops_every_tensor():
    state = ContextState(text=torch.ones(2, 3), text_tokens=torch.ones(2, 4, 3), text_mask=torch.ones(2, 4))
    state.clear()
    assert state.text is None and state.text_tokens is None and state.text_mask is None
