"""Specialization and forgetting of downstream tuning: E, F and O on hand-computed numbers."""

from __future__ import annotations

import pytest

from covft.analysis.transfer import specialization_forgetting


def test_efo_on_hand_numbers() -> None:
    # D: 40 -> 70; upstream gqa 60 -> 50 (-10), mme 1400/20 = 70 -> 1320/20 = 66 (-4)
    efo = specialization_forgetting(40.0, 70.0, {"gqa": 60.0, "mme": 70.0}, {"gqa": 50.0, "mme": 66.0})
    assert efo == pytest.approx({"E": 30.0, "F": -7.0, "O": 11.5})
    gain = specialization_forgetting(50.0, 45.0, {"gqa": 60.0}, {"gqa": 62.5})
    assert gain == pytest.approx({"E": -5.0, "F": 2.5, "O": -1.25})
    with pytest.raises(ValueError, match="differ before and after"):
        specialization_forgetting(0, 1, {"gqa": 1.0}, {"mme": 1.0})
    with pytest.raises(ValueError, match="at least one upstream"):
        specialization_forgetting(0, 1, {}, {})
