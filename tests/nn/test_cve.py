import pytest
import torch

from covft.nn import ContextVectorExtractor, PostNormResidualBlock


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_release_for_vit_l_and_bert_base():
    cve = ContextVectorExtractor(1024, 768)
    assert _count(cve.visual_block) == 4_199_424
    assert _count(cve.text_block) == 2_363_136
    assert _count(cve.attn) == 3_935_232
    assert _count(cve) == 4_199_424 + 2_363_136 + 3_935_232
    assert isinstance(cve.visual_block, PostNormResidualBlock)
    assert cve.attn.num_heads == 4 and cve.attn.kdim == cve.attn.vdim == 1024 + 768


def test_output_shape_and_dependence_on_text():
    torch.manual_seed(0)
    cve = ContextVectorExtractor(16, 12, num_heads=4)
    z = torch.randn(3, 7, 16)
    t = torch.randn(3, 12)
    c = cve(z, t)
    assert c.shape == (3, 12)
    c_other = cve(z, t.flip(0))
    assert not torch.allclose(c[0], c_other[0])
    # Rows are independent: sample 1 does not change when sample 0's text changes.
    t_changed = t.clone()
    t_changed[0] += 1.0
    torch.testing.assert_close(cve(z, t_changed)[1], c[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_multihead_attention_over_the_concatenated_keys_and_values(dtype):
    """The cheap order of computation is method.md 2.2's attention, value for value and gradient for gradient."""
    torch.manual_seed(0)
    cve = ContextVectorExtractor(16, 12, num_heads=4).to(dtype)
    with torch.no_grad():  # non-zero biases, so the dropped key bias and the value bias are exercised
        cve.attn.in_proj_bias.normal_()
    z, t = torch.randn(3, 7, 16, dtype=dtype), torch.randn(3, 12, dtype=dtype)

    def reference():
        visual, text = cve.visual_block(z), cve.text_block(t)
        kv = torch.cat([visual, text.unsqueeze(1).expand(3, 7, 12)], dim=-1)
        return cve.attn(text.unsqueeze(1), kv, kv, need_weights=False)[0].squeeze(1)

    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
    torch.testing.assert_close(cve(z, t), reference(), **tolerance)
    cve(z, t).pow(2).sum().backward()
    ours = {n: p.grad.clone() for n, p in cve.named_parameters()}
    cve.zero_grad()
    reference().pow(2).sum().backward()
    for name, param in cve.named_parameters():
        torch.testing.assert_close(ours[name], param.grad, **tolerance, msg=name)


def test_single_query_pooling_ignores_token_order():
    torch.manual_seed(0)
    cve = ContextVectorExtractor(16, 12, num_heads=4)
    z = torch.randn(2, 9, 16)
    t = torch.randn(2, 12)
    permutation = torch.randperm(9)
    torch.testing.assert_close(cve(z[:, permutation], t), cve(z, t), atol=1e-6, rtol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    cve = ContextVectorExtractor(16, 12, num_heads=4)
    cve(torch.randn(2, 5, 16), torch.randn(2, 12)).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cve.parameters())


def test_shape_errors_name_the_expected_shape():
    cve = ContextVectorExtractor(16, 12, num_heads=4)
    with pytest.raises(ValueError, match=r"text_vector must be \[2, 12\]"):
        cve(torch.randn(2, 5, 16), torch.randn(3, 12))
    with pytest.raises(ValueError, match=r"visual_tokens must be \[B, N, 16\]"):
        cve(torch.randn(2, 5, 8), torch.randn(2, 12))
    with pytest.raises(ValueError, match="must divide"):
        ContextVectorExtractor(16, 10, num_heads=4)
