"""Mixing training files: exact repeat-factor counts, a seeded nested fraction, the default unchanged."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from covft.data import mixture
from covft.data.dataset import LlavaDataset
from covft.data.records import Record


def records(file: str, count: int) -> list[Record]:
    turns = [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]
    return [Record(f"{file}-{i}", turns, (), file, i, 2) for i in range(1, count + 1)]


def write_file(path: Path, count: int) -> Path:
    rows = [
        {
            "id": f"{path.stem}-{i}",
            "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}],
        }
        for i in range(1, count + 1)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ids(chosen: list[Record]) -> list[str]:
    return [r.sample_id for r in chosen]


def test_one_whole_file_is_returned_unchanged(tmp_path: Path) -> None:
    read = records("a", 50)
    mixed, shares = mixture.mix([("a", read)], None, 1.0, 0)
    assert mixed == read and [m is r for m, r in zip(mixed, read, strict=True)] == [True] * 50
    assert shares == [mixture.Share("a", 50, 50, 1.0, 50)]
    data = LlavaDataset(write_file(tmp_path / "a.jsonl", 5))
    assert ids(data.records) == [f"a-{i}" for i in range(1, 6)] and data.mixture_summary() == ""


def test_fractions_are_seeded_nested_and_in_file_order() -> None:
    read = records("a", 80)
    chosen = {f: ids(mixture.mix([("a", read)], None, f, 7)[0]) for f in (0.125, 0.25, 0.5, 1.0)}
    assert {f: len(c) for f, c in chosen.items()} == {0.125: 10, 0.25: 20, 0.5: 40, 1.0: 80}
    assert set(chosen[0.125]) < set(chosen[0.25]) < set(chosen[0.5]) < set(chosen[1.0])
    for subset in chosen.values():
        assert subset == sorted(subset, key=lambda i: int(i.split("-")[1]))  # file order
    assert ids(mixture.mix([("a", read)], None, 0.25, 7)[0]) == chosen[0.25]  # same for every strategy
    assert ids(mixture.mix([("a", read)], None, 0.25, 8)[0]) != chosen[0.25]
    assert chosen[0.125] != [f"a-{i}" for i in range(1, 11)]  # not the head of the file


def test_weights_are_exact_repeat_factors_applied_after_the_fraction() -> None:
    files = [("a", records("a", 10)), ("b", records("b", 7))]
    mixed, shares = mixture.mix(files, [2, 0.5], 1.0, 0)
    counts = Counter(ids(mixed))
    assert len(mixed) == 20 + 4  # 2 x 10, round(0.5 x 7) = 4
    assert all(counts[f"a-{i}"] == 2 for i in range(1, 11))
    assert sum(1 for key in counts if key.startswith("b-")) == 4 and max(counts.values()) == 2
    assert [s.samples for s in shares] == [20, 4]
    mixed, shares = mixture.mix(files, [2, 1.5], 0.5, 0)
    assert [(s.kept, s.samples) for s in shares] == [(5, 10), (4, 6)]  # 7 x 0.5 -> 4; 4 + round(0.5 x 4)
    kept = set(ids(mixture.mix(files, None, 0.5, 0)[0]))
    assert set(ids(mixed)) == kept  # the weights repeat the fraction's records, nothing else
    assert mixture.describe(shares, 0.5) == (
        "a: 10 records, fraction 0.5 -> 5, weight 2 -> 10 samples\n"
        "b: 7 records, fraction 0.5 -> 4, weight 1.5 -> 6 samples\n"
        "mixture: 16 samples per epoch"
    )


def test_the_dataset_mixes_files_and_prints_the_counts(tmp_path: Path) -> None:
    first, second = write_file(tmp_path / "a.jsonl", 8), write_file(tmp_path / "b.jsonl", 4)
    data = LlavaDataset([first, second], weights=[1, 3], fraction=0.5, fraction_seed=3)
    assert len(data) == 4 + 3 * 2 and data.num_records == 12
    assert data.mixture_summary().splitlines() == [
        f"{first}: 8 records, fraction 0.5 -> 4, weight 1 -> 4 samples",
        f"{second}: 4 records, fraction 0.5 -> 2, weight 3 -> 6 samples",
        "mixture: 10 samples per epoch",
    ]


@pytest.mark.parametrize(
    ("weights", "fraction", "message"),
    [
        (None, 0.0, r"fraction must be in \(0, 1\], got 0.0"),
        ([1.0], 1.0, r"1 weight\(s\) for 2 file\(s\)"),
        ([1.0, -1.0], 1.0, r"weights are repeat factors and must be > 0"),
    ],
)
def test_invalid_mixtures_are_refused(weights: list[float] | None, fraction: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mixture.mix([("a", records("a", 2)), ("b", records("b", 2))], weights, fraction, 0)
