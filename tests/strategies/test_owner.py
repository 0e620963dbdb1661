"""Q-MoE's projector mixture and QA-ViT's attention with ``ContextState.owner``: per-sample context
gathered to the tower's rows (several images or anyres tiles per sample) or packed tokens."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from covft.nn.context import ContextState
from covft.strategies.qavit import QuestionAwareAttention
from covft.strategies.qmoe import ProjectorMoE

D, D_OUT, T_DIM, N, E = 8, 6, 5, 3, 3
F64 = {"atol": 1e-12, "rtol": 1e-10}
OWNER = torch.tensor([1, 0, 1, 1, 0])  # five rows, two samples, interleaved


def _projector_moe(projector: nn.Module | None = None) -> tuple[ProjectorMoE, ContextState]:
    torch.manual_seed(0)
    projector = projector or nn.Sequential(nn.Linear(D, D_OUT), nn.GELU(), nn.Linear(D_OUT, D_OUT))
    state = ContextState(text=torch.randn(2, T_DIM, dtype=torch.float64))
    moe = ProjectorMoE(projector.double(), state, T_DIM, E)
    with torch.no_grad():  # distinct experts, so the output depends on the gates
        for parameter in moe.experts.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    return moe, state


def test_projector_moe_without_owner_is_bitwise_the_old_formula():
    moe, state = _projector_moe()
    state.text = torch.randn(4, T_DIM, dtype=torch.float64)
    x = torch.randn(4, N, D, dtype=torch.float64)
    gates = torch.softmax(moe.router(state.text), dim=-1)
    expected = sum(gates[:, e, None, None] * expert(x) for e, expert in enumerate(moe.experts))
    assert torch.equal(moe(x), expected)
    assert moe.last_gates.shape == (4, E)


@pytest.mark.parametrize("layout", ["rows", "packed"])
def test_projector_moe_with_owner_mixes_every_row_with_its_samples_gates(layout):
    moe, state = _projector_moe()
    x = torch.randn(len(OWNER), N, D, dtype=torch.float64)
    owner = OWNER
    if layout == "packed":
        x, owner = x.reshape(-1, D), OWNER.repeat_interleave(N)
    state.owner = owner
    got = moe(x)
    assert got.shape == (*x.shape[:-1], D_OUT) and moe.last_gates.shape == (2, E)
    sample_gates = moe.last_gates
    state.text, state.owner = state.text[owner], None  # one instruction row per tower row
    if layout == "packed":  # the owner-less module takes rows [B, N, d]: one token per row
        expected = moe(x.unsqueeze(1)).squeeze(1)
    else:
        expected = moe(x)
    torch.testing.assert_close(got, expected, **F64)
    torch.testing.assert_close(moe.last_gates, sample_gates[owner], **F64)


class _Merger(nn.Module):
    """Qwen-VL's patch merger in miniature: every ``k`` consecutive tokens become one."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.k = k
        self.linear = nn.Linear(k * D, D_OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(-1, self.k * D))


def test_projector_moe_follows_a_merger_that_joins_consecutive_tokens():
    moe, state = _projector_moe(_Merger())
    x = torch.randn(8, D, dtype=torch.float64)
    state.owner = torch.tensor([1, 1, 0, 0, 0, 0, 1, 1])
    got = moe(x)
    gates = moe.last_gates[torch.tensor([1, 0, 0, 1])]
    expected = sum(gates[:, e, None] * expert(x) for e, expert in enumerate(moe.experts))
    torch.testing.assert_close(got, expected, **F64)
    state.owner = torch.tensor([1, 0, 0, 0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="some group holds rows of two samples"):
        moe(x)


class _DropLast(nn.Module):
    """A projector that changes the row count in a way Q-MoE cannot follow (5 rows -> 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D, D_OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)[:-1]


def test_projector_moe_errors():
    moe, state = _projector_moe(_DropLast())
    state.owner = OWNER
    with pytest.raises(ValueError, match="maps 5 rows to 4: Q-MoE handles a projector that keeps the rows"):
        moe(torch.randn(5, N, D, dtype=torch.float64))
    moe, state = _projector_moe()
    with pytest.raises(ValueError, match=r"packed \[T, d\] features needs ContextState.owner"):
        moe(torch.randn(4, D, dtype=torch.float64))
    with pytest.raises(ValueError, match="one instruction vector per image"):
        moe(torch.randn(3, N, D, dtype=torch.float64))
    state.owner = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="must index the 2 samples"):
        moe(torch.randn(3, N, D, dtype=torch.float64))
    state.owner = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"owner has shape \(2,\) but the vision tower got 3 rows"):
        moe(torch.randn(3, N, D, dtype=torch.float64))


class _Attention(nn.Module):
    """The parts of CLIPAttention that QuestionAwareAttention uses."""

    def __init__(self, dim: int = D, heads: int = 2) -> None:
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5


def _qavit() -> tuple[QuestionAwareAttention, ContextState]:
    torch.manual_seed(0)
    tokens = torch.randn(2, 4, T_DIM, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    state = ContextState(text_tokens=tokens, text_mask=mask)
    qa = QuestionAwareAttention(_Attention().double(), state, T_DIM)
    with torch.no_grad():
        qa.gate.fill_(0.7)
    return qa, state


def test_qavit_with_owner_attends_to_each_rows_sample_instruction():
    qa, state = _qavit()
    hidden = torch.randn(len(OWNER), N, D, dtype=torch.float64)
    state.owner = OWNER
    got, weights = qa(hidden)
    assert weights is None and got.shape == hidden.shape
    tokens, mask = state.text_tokens, state.text_mask
    state.owner, state.text_tokens, state.text_mask = None, tokens[OWNER], mask[OWNER]
    assert torch.equal(got, qa(hidden)[0])
    state.text_tokens = tokens[1 - OWNER]  # the other sample's instruction changes the output
    assert (qa(hidden)[0] - got).abs().max() > 1e-6


def test_qavit_errors():
    qa, state = _qavit()
    with pytest.raises(
        NotImplementedError, match=r"QA-ViT on packed \(Qwen-VL style\) towers is not implemented"
    ):
        qa(torch.randn(6, D, dtype=torch.float64))
    with pytest.raises(ValueError, match="2 instructions for 3 images"):
        qa(torch.randn(3, N, D, dtype=torch.float64))
    state.owner = torch.tensor([0, 0, 0])
    with pytest.raises(ValueError, match=r"1 of 2 own none"):
        qa(torch.randn(3, N, D, dtype=torch.float64))
