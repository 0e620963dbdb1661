"""The official rules give, on the official-format fixtures (conftest.py) with hand-made
predictions, the scores worked out by hand from each benchmark's own script (docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from covft.eval import score
from covft.eval.benchmarks import get_adapter
from covft.eval.official import evalai_answer, mme_label, sqa_letter, textvqa_accuracy, vlmeval_choice


def records(data_root: Path, name: str, predictions: dict[str, str]) -> list[dict]:
    """The fixture's ``llava15`` items of ``name`` with a hand-made prediction each (by id)."""
    adapter = get_adapter(name)
    items = adapter.load(adapter.folder(data_root))
    assert {i["id"] for i in items} == set(predictions)
    return [{**item, "prediction": predictions[item["id"]]} for item in items]


def tolerant(rows: list[dict]) -> list[dict]:
    """The same records scored as a suite's (covft's tolerant rules)."""
    return [{**row, "protocol": "suite"} for row in rows]


def test_mme_calculation_rule(data_root: Path) -> None:
    predictions = {}
    for item in get_adapter("mme").load(get_adapter("mme").folder(data_root)):
        predictions[item["id"]] = item["answer"]
    predictions["existence/0002/0"] = "There is"  # no yes/no in the first four characters: "other"
    predictions["count/count_1/0"] = "yes."  # "yes" within the first four characters
    predictions["count/count_1/1"] = "Nope"  # ... and "no"
    predictions["color/color_1/0"] = ". Yes"  # ". ye": other (the tolerant rule strips the period first)
    result = score("mme", records(data_root, "mme", predictions))
    assert result["rules"] == "official"
    assert result["breakdown"]["existence"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert result["breakdown"]["count"]["score"] == 200.0
    assert result["breakdown"]["color"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0}
    assert result["score"] == pytest.approx(125 + 200 + 50 + 7 * 200)  # 1775
    assert score("mme", tolerant(records(data_root, "mme", predictions)))["score"] == pytest.approx(1925)


def test_mmbench_circular_groups_the_rows_of_the_tsv(data_root: Path) -> None:
    predictions = {
        "0": "C", "1000000": "B", "2000000": "The answer is A", "3000000": "D",  # every copy right
        "1": "B", "1000001": "B",  # the copy's answer is A: question 1 fails
        "2": "red", "1000002": "C. red", "2000002": "B",  # option text, then letters: right
    }  # fmt: skip
    result = score("mmbench_en", records(data_root, "mmbench_en", predictions))
    assert result["n"] == 9 and result["breakdown"]["questions"] == 3
    assert result["score"] == pytest.approx(200 / 3)  # 2 of 3 questions
    assert result["breakdown"]["vanilla"] == pytest.approx(100.0)  # the three original rows
    assert result["breakdown"]["per_category"] == {"attribute": 100.0, "object": 100.0, "scene": 0.0}


def test_gqa_exact_match_after_llava_conversion(data_root: Path) -> None:
    predictions = {"202225914": "Dog.", "201307251": "No", "201640614": "The woman"}
    rows = records(data_root, "gqa", predictions)
    assert score("gqa", rows)["score"] == pytest.approx(200 / 3)  # "the woman" != "woman"
    assert score("gqa", tolerant(rows))["score"] == pytest.approx(100.0)


def test_scienceqa_letter_only(data_root: Path) -> None:
    predictions = {"5": "B", "7": "(C)", "9": "The answer is B."}
    rows = records(data_root, "scienceqa_img", predictions)
    assert score("scienceqa_img", rows)["score"] == pytest.approx(200 / 3)  # "(C)" is not read
    assert score("scienceqa_img", tolerant(rows))["score"] == pytest.approx(100.0)


def test_ai2d_first_character_rule(data_root: Path) -> None:
    # answers B, A, C: "The answer is: A." leaves ": a" whose first character is ":", wrong;
    # "Clearly grass" reads as "c", option C, right by accident, as in ai2d_test.py
    predictions = {"0": "B", "1": "The answer is: A.", "2": "Clearly grass"}
    rows = records(data_root, "ai2d", predictions)
    assert score("ai2d", rows)["score"] == pytest.approx(200 / 3)
    assert score("ai2d", tolerant(rows))["score"] == pytest.approx(100.0)


def test_textvqa_evalai_processor_and_leave_one_out(data_root: Path) -> None:
    predictions = {"34602": "Nokia", "34603": "10.", "34604": "Stop!"}
    rows = records(data_root, "textvqa", predictions)
    # 34602: 8 of 10 annotators said nokia -> 1.0. 34603: "10." and "ten" both become "10" -> 1.0.
    # 34604: 2 of 10 said stop -> (2 x 1/3 + 8 x 2/3) / 10 = 0.6.
    assert score("textvqa", rows)["score"] == pytest.approx(100 * (1 + 1 + 0.6) / 3)
    # covft's tolerant normaliser keeps "10." whole: it matches one annotator -> 9 x 1/3 / 10 = 0.3
    assert score("textvqa", tolerant(rows))["score"] == pytest.approx(100 * (1 + 0.3 + 0.6) / 3)


def test_mmvp_pairs_with_the_release_extraction(data_root: Path) -> None:
    predictions = {
        "1": "A",
        "2": "Closed.",
        "3": "(b)",
        "4": "A. Left",
    }  # "a. left" is neither "a" nor "left"
    result = score("mmvp", records(data_root, "mmvp", predictions))
    assert result["score"] == pytest.approx(50.0)
    assert result["breakdown"] == {"pairs": 2, "question_accuracy": pytest.approx(75.0)}


def test_realworldqa_first_word_rule(data_root: Path) -> None:
    predictions = {"0": "C.", "1": "3 lanes", "2": "The road is wet."}
    assert score("realworldqa", records(data_root, "realworldqa", predictions))["score"] == pytest.approx(
        200 / 3
    )


def test_cvbench_rules_per_script(data_root: Path) -> None:
    coco = score("cvbench_coco", records(data_root, "cvbench_coco", {"1": "B", "2": "1"}))
    assert coco["score"] == pytest.approx(50.0)  # "1" is option A's text, not a letter
    assert coco["breakdown"]["per_task"] == {"Count": 0.0, "Relation": 100.0}
    assert score("cvbench_ade20k", records(data_root, "cvbench_ade20k", {"0": "(C) 1"}))["score"] == 100.0
    omni = score("cvbench_omni3d", records(data_root, "cvbench_omni3d", {"3": "lamp", "4": "B:"}))
    assert omni["score"] == pytest.approx(50.0)  # "lamp" is cut to "l"


# --------------------------------------------------------------------------- the answer readers


@pytest.mark.parametrize(
    ("answer", "processed"),
    [
        ("10.", "10"),  # the look-ahead typo strips a period after a digit
        ("3.5", "3.5"),
        ("Two", "2"),
        ("The Dog.", "dog"),
        ("man's hat", "man 's hat"),
        ("coca-cola", "coca cola"),
        ("dont", "don't"),
        ("1,000", "1000"),
        ("yes!", "yes"),
        ("a - b", "b"),  # "-" next to a space is dropped, the article "a" too
    ],
)
def test_evalai_answer_processor(answer: str, processed: str) -> None:
    assert evalai_answer(answer) == processed


def test_textvqa_accuracy_by_hand() -> None:
    answers = ["nokia", "nokia"] + ["samsung"] * 8
    assert textvqa_accuracy("nokia", answers) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert textvqa_accuracy("Samsung.", answers) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("A", "A"),
        ("(B)", "B"),
        ("The answer is B because it is", "B"),  # B among the last four words
        ("B is right since the picture clearly shows it", None),  # too early, too long for the text rule
        ("cow", "C"),  # the option text
        ("dog or cat", None),  # two option texts
        ("Sorry, I can't help with images of people yet.", "Z"),
        ("Z", "Z"),
    ],
)
def test_vlmevalkit_exact_matching(prediction: str, expected: str | None) -> None:
    assert vlmeval_choice(prediction, {"A": "dog", "B": "cat", "C": "cow"}) == expected


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [("A", "A"), ("AB", None), ("B. whale", "B"), ("B.", None), ("(B)", None), ("The answer is B.", "B"),
     ("The answer is B", None), ("", None)],
)  # fmt: skip
def test_scienceqa_letter(prediction: str, expected: str | None) -> None:
    assert sqa_letter(prediction) == expected


def test_mme_label() -> None:
    assert [mme_label(p) for p in ["Yes", "no", "Yes, there is", "Nope", ". yes", "maybe", ""]] == [
        "yes", "no", "yes", "no", "other", "other", "other",
    ]  # fmt: skip


def test_mixed_protocols_are_refused() -> None:
    rows = [
        {"id": "1", "answer": "a", "prediction": "a", "protocol": "llava15"},
        {"id": "2", "answer": "a", "prediction": "a"},
    ]
    with pytest.raises(ValueError, match=r"gqa: items of several protocols \['llava15', 'suite'\]"):
        score("gqa", rows)
