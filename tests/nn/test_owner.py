"""Per-sample routing with ``ContextState.owner``: several tower rows (images, anyres tiles) per
sample, or packed tokens ``[T, d]`` (Qwen-VL). The reference is always today's owner-less module
run on each sample's tokens concatenated into one ``[1, n_s, d]`` row."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from covft.nn import ContextState, ContextVectorExtractor
from covft.nn.segments import check_owner, segment_mean

D, T_DIM, N = 16, 12, 3
F64 = {"atol": 1e-12, "rtol": 1e-10}
OWNERS = {
    # sample index of each tower row; three samples with 1, 2 and 4 rows
    "contiguous": [0, 1, 1, 2, 2, 2, 2],
    "shuffled_contiguous": [2, 2, 2, 2, 0, 1, 1],
    "interleaved": [1, 2, 0, 2, 1, 2, 2],
}


def _tokens(layout: str, owner_rows: list[int], dtype=torch.float64):
    """``(x, owner)``: ``[R, N, D]`` rows with ``owner [R]``, or packed ``[T, D]`` with ``owner [T]``
    (each row's N tokens, so samples own uneven numbers of tokens)."""
    owner = torch.tensor(owner_rows)
    x = torch.randn(len(owner_rows), N, D, dtype=dtype)
    if layout == "packed":
        return x.reshape(-1, D), owner.repeat_interleave(N)
    return x, owner


def _sample_row(x: torch.Tensor, owner: torch.Tensor, sample: int) -> torch.Tensor:
    """All tokens of ``sample`` as one ``[1, n_s, D]`` row, in order."""
    return x[owner == sample].reshape(1, -1, D)


# ----------------------------------------------------------------------------------------- CVE
def _old_attend(cve: ContextVectorExtractor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The owner-less CVE as it was before owners existed (copied), to hold it bit for bit."""
    visual, text, attn = cve.visual_block(z), cve.text_block(t), cve.attn
    batch, heads, dim = visual.shape[0], attn.num_heads, cve.visual_dim
    head_dim = cve.text_dim // heads
    query_bias, _, value_bias = attn.in_proj_bias.chunk(3)
    query = F.linear(text, attn.q_proj_weight, query_bias).view(batch, heads, head_dim)
    key_visual = attn.k_proj_weight[:, :dim].reshape(heads, head_dim, dim)
    value_visual = attn.v_proj_weight[:, :dim].reshape(heads, head_dim, dim)
    probe = torch.einsum("bhe,hed->bhd", query, key_visual) * head_dim**-0.5
    weights = torch.einsum("bhd,bnd->bhn", probe, visual).softmax(dim=-1)
    pooled = torch.einsum("bhn,bnd->bhd", weights, visual)
    values = torch.einsum("bhd,hed->bhe", pooled, value_visual).reshape(batch, cve.text_dim)
    values = values + F.linear(text, attn.v_proj_weight[:, dim:], value_bias)
    return attn.out_proj(values)


def _cve(dtype=torch.float64) -> ContextVectorExtractor:
    torch.manual_seed(0)
    cve = ContextVectorExtractor(D, T_DIM, num_heads=4).to(dtype)
    with torch.no_grad():
        cve.attn.in_proj_bias.normal_()
    return cve


def test_cve_without_owner_is_bitwise_unchanged():
    cve = _cve(torch.float32)
    z, t = torch.randn(3, 7, D), torch.randn(3, T_DIM)
    assert torch.equal(cve(z, t), _old_attend(cve, z, t))
    assert torch.equal(cve(z, t, None), _old_attend(cve, z, t))


@pytest.mark.parametrize("layout", ["rows", "packed"])
@pytest.mark.parametrize("owners", list(OWNERS))
def test_cve_with_owner_pools_each_samples_tokens_as_one_row(owners, layout):
    cve = _cve()
    x, owner = _tokens(layout, OWNERS[owners])
    t = torch.randn(3, T_DIM, dtype=torch.float64)
    got = cve(x, t, owner)
    expected = torch.cat([cve(_sample_row(x, owner, s), t[s : s + 1]) for s in range(3)])
    assert got.shape == (3, T_DIM)
    torch.testing.assert_close(got, expected, **F64)


@pytest.mark.parametrize("layout", ["rows", "packed"])
def test_cve_with_owner_has_the_gradients_of_the_per_sample_loop(layout):
    cve = _cve()
    x, owner = _tokens(layout, OWNERS["interleaved"])
    x.requires_grad_(True)
    t = torch.randn(3, T_DIM, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, T_DIM, dtype=torch.float64)
    (cve(x, t, owner) * weight).sum().backward()
    ours = {n: p.grad.clone() for n, p in cve.named_parameters()}
    ours_x, ours_t = x.grad.clone(), t.grad.clone()
    cve.zero_grad()
    x.grad = t.grad = None
    sum((cve(_sample_row(x, owner, s), t[s : s + 1]) * weight[s]).sum() for s in range(3)).backward()
    for name, parameter in cve.named_parameters():
        torch.testing.assert_close(ours[name], parameter.grad, **F64, msg=name)
    torch.testing.assert_close(ours_x, x.grad, **F64)
    torch.testing.assert_close(ours_t, t.grad, **F64)


def test_cve_owner_in_half_precision_accumulates_in_float32():
    cve = _cve(torch.float32)
    x, owner = _tokens("packed", OWNERS["interleaved"], torch.float32)
    t = torch.randn(3, T_DIM)
    expected = cve(x, t, owner)
    got = cve.to(torch.bfloat16)(x.bfloat16(), t.bfloat16(), owner)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.1, rtol=0.05)


def test_cve_owner_errors_say_what_is_wrong():
    cve = _cve()
    x = torch.randn(4, N, D, dtype=torch.float64)
    t = torch.randn(2, T_DIM, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"values must index the 2 samples \(0\.\.1\), got values in \[0, 2\]"
    ):
        cve(x, t, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"values must index.*\[-1, 1\]"):
        cve(x, t, torch.tensor([0, 1, -1, 1]))
    with pytest.raises(ValueError, match=r"1 of 2 own none \(samples \[1\]\)"):
        cve(x, t, torch.tensor([0, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"shape \[4\], got torch.int64 of shape \(3,\)"):
        cve(x, t, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="long tensor"):
        cve(x, t, torch.tensor([0.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"text_vector must be \[S, 12\]"):
        cve(x, torch.randn(2, 5, dtype=torch.float64), torch.tensor([0, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"\[R, N, 16\] \(rows\) or \[T, 16\] \(packed tokens\)"):
        cve(x.unsqueeze(0), t, torch.tensor([0]))


def test_segment_helpers():
    owner = torch.tensor([1, 0, 1])
    rows = torch.arange(3 * 2 * 2, dtype=torch.float64).view(3, 2, 2)
    torch.testing.assert_close(
        segment_mean(rows, owner, 2), torch.stack([rows[1].mean(0), rows[[0, 2]].mean((0, 1))])
    )
    with pytest.raises(ValueError, match="both must be positive"):
        check_owner(torch.zeros(0, dtype=torch.long), 0, 1)


# ----------------------------------------------------------------------------- ContextState
def test_context_state_rows_gathers_per_sample_tensors():
    text = torch.randn(2, T_DIM)
    state = ContextState(text=text)
    assert state.rows(text, 2) is text
    with pytest.raises(ValueError, match=r"ContextState.text has 2 rows but the vision tower got 3 images"):
        state.rows(text, 3, name="text")
    state.owner = torch.tensor([1, 0, 1])
    assert torch.equal(state.rows(text, 3), text[[1, 0, 1]])
    with pytest.raises(ValueError, match=r"owner has shape \(3,\) but the vision tower got 4 rows"):
        state.rows(text, 4)
    with pytest.raises(ValueError, match="must index the 1 samples"):
        state.rows(text[:1], 3)
    state.clear()
    assert state.owner is None and state.text is None
