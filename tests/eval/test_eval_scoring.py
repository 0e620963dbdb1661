"""covft's tolerant rules (the ``suite`` protocol: records without an official protocol) and the
aggregation every rule set shares reproduce hand-computed values for every benchmark's metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from covft.eval import score
from covft.eval.answers import extract_choice, normalize_short, normalize_vqa, vqa_accuracy, yes_no
from covft.eval.benchmarks import get_adapter

OPTIONS = {"A": "dog", "B": "cat", "C": "bird", "D": "red car"}


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("B. cat", "B"),
        ("B) cat", "B"),
        ("The answer is B", "B"),
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("b)", "B"),
        ("b", "B"),
        ("cat", "B"),
        ("Cat.", "B"),
        ("It is a bird.", "C"),
        ("I think B is right", "B"),
        ("A cat", "B"),  # the article, then option B's text
        ("The answer is a cat", "B"),
        ("car", None),  # part of an option text is not the option
        ("dog or cat", None),  # two options
        ("Yes", None),
        ("E", None),  # not an option letter
        ("", None),
    ],
)
def test_extract_choice(prediction: str, expected: str | None) -> None:
    assert extract_choice(prediction, OPTIONS) == expected


def test_vqa_accuracy_leave_one_out_by_hand() -> None:
    answers = ["nokia", "nokia"] + ["samsung"] * 8
    # the 2 subsets without a "nokia" annotator have 1 match -> 1/3; the 8 others have 2 -> 2/3
    assert (
        vqa_accuracy("nokia", answers)
        == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
        == pytest.approx(0.6)
    )
    three = ["nokia"] * 3 + ["samsung"] * 7
    assert vqa_accuracy("nokia", three) == pytest.approx((3 * (2 / 3) + 7 * 1) / 10)  # 0.9
    assert vqa_accuracy("samsung", answers) == pytest.approx(1.0)
    assert vqa_accuracy("apple", answers) == 0.0


def test_vqa_normalisation_is_the_standard_one() -> None:
    assert normalize_vqa("Two") == "2"
    assert normalize_vqa("The Dog.") == "dog"
    assert normalize_vqa("dont") == "don't"
    assert normalize_vqa("yes!") == "yes"
    assert normalize_vqa("1,000") == "1000"
    assert normalize_vqa("3.5") == "3.5"
    assert normalize_vqa("coca-cola") == "coca cola"
    assert vqa_accuracy("Five.", ["5"] * 10) == pytest.approx(1.0)


def test_textvqa_score_is_mean_percent() -> None:
    records = [
        {"id": "1", "answers": ["nokia", "nokia"] + ["x"] * 8, "prediction": "Nokia"},
        {"id": "2", "answers": ["5"] * 10, "prediction": "five"},
    ]
    result = score("textvqa", records)
    assert result["score"] == pytest.approx((60.0 + 100.0) / 2)
    assert result["n"] == 2 and result["benchmark"] == "textvqa" and result["rules"] == "tolerant"


def _mme(category: str, image: str, answer: str, prediction: str) -> dict:
    return {"id": f"{image}/{answer}", "category": category, "image_id": image, "answer": answer,
            "prediction": prediction}  # fmt: skip


def test_mme_acc_and_acc_plus_with_a_half_right_pair() -> None:
    records = [
        _mme("color", "color/1", "Yes", "Yes"),
        _mme("color", "color/1", "No", "No, it is not."),
        _mme("color", "color/2", "Yes", "Yes"),
        _mme("color", "color/2", "No", "Yes"),  # half-right pair: counts for acc, not acc+
        _mme("OCR", "OCR/1", "Yes", "no"),
        _mme("OCR", "OCR/1", "No", "No"),
    ]
    result = score("mme", records)
    assert result["breakdown"]["color"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert result["breakdown"]["OCR"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0}
    assert result["score"] == pytest.approx(175.0)


def test_yes_no_reading() -> None:
    assert [yes_no(p) for p in ["Yes.", "no", "Yes, there is", "No it isn't", "maybe", ""]] == [
        "yes", "no", "yes", "no", None, None,
    ]  # fmt: skip


def _mmbench(index: str, rotation: int, options: dict, answer: str, prediction: str) -> dict:
    return {"id": f"{index}/r{rotation}", "index": index, "rotation": rotation, "options": options,
            "answer": answer, "hint": None, "prediction": prediction, "category": "c"}  # fmt: skip


def test_mmbench_circular_fails_an_answer_that_changes_under_rotation() -> None:
    rotations = [
        ({"A": "cat", "B": "dog", "C": "cow"}, "C"),
        ({"A": "dog", "B": "cow", "C": "cat"}, "B"),
        ({"A": "cow", "B": "cat", "C": "dog"}, "A"),
    ]
    always_a = [_mmbench("1", r, o, a, "A") for r, (o, a) in enumerate(rotations)]  # right only at r=2
    consistent = [_mmbench("2", r, o, a, o[a]) for r, (o, a) in enumerate(rotations)]  # says "cow" each time
    result = score("mmbench_en", always_a + consistent)
    assert result["score"] == pytest.approx(50.0)
    assert result["breakdown"]["questions"] == 2
    assert result["breakdown"]["vanilla"] == pytest.approx(50.0)  # rotation 0: q1 wrong, q2 right
    assert score("mmbench_cn", always_a)["score"] == 0.0


def test_mmvp_counts_a_pair_only_when_both_are_right() -> None:
    options = {"A": "Open", "B": "Closed"}
    records = [
        {"id": "1", "pair_id": "1", "options": options, "answer": "A", "prediction": "A"},
        {"id": "2", "pair_id": "1", "options": options, "answer": "B", "prediction": "(b) Closed"},
        {"id": "3", "pair_id": "2", "options": options, "answer": "B", "prediction": "B"},
        {"id": "4", "pair_id": "2", "options": options, "answer": "A", "prediction": "B"},
    ]
    result = score("mmvp", records)
    assert result["score"] == pytest.approx(50.0)
    assert result["breakdown"] == {"pairs": 2, "question_accuracy": pytest.approx(75.0)}
    constant = score("mmvp", _with(records, ["A"] * 4))  # the two answers of a pair differ
    assert constant["score"] == 0.0 and constant["breakdown"]["question_accuracy"] == pytest.approx(50.0)


def _with(items: list[dict], predictions: list[str]) -> list[dict]:
    return [{**item, "prediction": p} for item, p in zip(items, predictions, strict=True)]


def _balanced(n_options: int, n_items: int) -> list[dict]:
    letters = "ABCD"[:n_options]
    return [
        {"id": str(i), "options": {x: f"thing {x}" for x in letters}, "answer": letters[i % n_options],
         "source": "COCO", "task": "Count" if i % 2 else "Relation"}
        for i in range(n_items)
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["ai2d", "cvbench_coco", "cvbench_ade20k", "cvbench_omni3d"])
def test_option_benchmarks_gold_is_100_and_constant_is_chance(name: str) -> None:
    items = _balanced(4, 8)
    assert score(name, _with(items, [i["answer"] for i in items]))["score"] == 100.0
    assert score(name, _with(items, ["A"] * 8))["score"] == pytest.approx(25.0)
    assert score(name, _with(items, ["no idea"] * 8))["score"] == 0.0


def test_cvbench_breakdown_per_task() -> None:
    items = _balanced(4, 8)
    result = score("cvbench_coco", _with(items, ["A"] * 8))
    # answers cycle A,B,C,D; odd ids are Count (B, D), even ids Relation (A, C)
    assert result["breakdown"]["per_task"] == {"Count": 0.0, "Relation": 50.0}


def test_scienceqa_answer_index_and_option_text() -> None:
    items = [
        {"id": str(i), "choices": ["frog", "whale"], "answer": i % 2} for i in range(6)
    ]  # answers 0,1,0,1,0,1
    assert score("scienceqa_img", _with(items, ["A", "B"] * 3))["score"] == 100.0
    assert score("scienceqa_img", _with(items, ["whale"] * 6))["score"] == pytest.approx(50.0)
    assert score("scienceqa_img", _with(items, ["(A)"] * 6))["score"] == pytest.approx(50.0)


def test_gqa_exact_match_after_normalisation() -> None:
    assert normalize_short("The Dog.") == "dog"
    records = [
        {"id": "1", "answer": "dog", "prediction": "The dog."},
        {"id": "2", "answer": "no", "prediction": "No"},
        {"id": "3", "answer": "left", "prediction": "on the left"},
        {"id": "4", "answer": "white", "prediction": "gray"},
    ]
    assert score("gqa", records)["score"] == pytest.approx(50.0)


def test_realworldqa_letter_and_short_answers() -> None:
    records = [
        {
            "id": "1",
            "answer": "C",
            "options": {"A": "Left", "B": "Straight", "C": "Right"},
            "prediction": "C.",
        },
        {"id": "2", "answer": "3", "prediction": "3"},
        {"id": "3", "answer": "B", "options": {"A": "Yes", "B": "No"}, "prediction": "Yes"},
        {"id": "4", "answer": "3", "prediction": "4"},
    ]
    assert score("realworldqa", records)["score"] == pytest.approx(50.0)


def test_loaded_items_score_100_with_gold_predictions(data_root: Path) -> None:
    adapter = get_adapter("mmbench_en")
    items = adapter.load(adapter.folder(data_root))
    gold = score("mmbench_en", _with(items, [i["answer"] for i in items]))
    assert gold["score"] == 100.0 and gold["rules"] == "official"
    assert score("mmbench_en", _with(items, ["A"] * len(items)))["score"] == 0.0


def test_score_errors_are_specific() -> None:
    with pytest.raises(ValueError, match="record 'q7' has no 'prediction'"):
        score("gqa", [{"id": "q7", "answer": "dog"}])
    with pytest.raises(KeyError, match="no scorer for benchmark 'vqav2'"):
        score("vqav2", [{"id": "1", "prediction": "x"}])
    with pytest.raises(ValueError, match="no records"):
        score("gqa", [])
