"""Scoring: records in, numbers out (no model here).

``score(benchmark, records)`` returns ``{"benchmark", "score", "metric", "n", "rules",
"breakdown"}`` (docs/benchmark-records.md). Scores are percentages, except MME, whose score is the
sum over its perception subtasks of acc + acc+ (max 2000), as in MME's own calculation script.

Two sets of rules judge single predictions; the records' protocol (:mod:`covft.eval.protocol`)
picks one: ``official`` (:mod:`covft.eval.official`, each benchmark's own script) for items read
from the official files, ``tolerant`` (covft's forgiving answer extraction, :mod:`covft.eval.answers`) for suites
such as the conflict world's. How judgements add up (MME's acc + acc+, MMBench's circular
groups, MMVP's pairs, per-task breakdowns) is the same for both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from covft.eval.answers import extract_choice, normalize_short, vqa_accuracy, yes_no
from covft.eval.benchmarks.base import LETTERS
from covft.eval.official import JUDGES as OFFICIAL_JUDGES
from covft.eval.official import prediction_of

# --------------------------------------------------------------------------- tolerant judges


def _choice(record: Mapping[str, Any], options: Mapping[str, str], answer: str) -> float:
    return float(extract_choice(prediction_of(record), dict(options)) == answer)


def _letter(record: Mapping[str, Any]) -> float:
    return _choice(record, record["options"], str(record["answer"]).strip().upper())


def _tolerant_scienceqa(record: Mapping[str, Any]) -> float:
    options = {LETTERS[i]: str(text) for i, text in enumerate(record["choices"])}
    return _choice(record, options, LETTERS[int(record["answer"])])


def _tolerant_realworldqa(record: Mapping[str, Any]) -> float:
    answer = str(record["answer"]).strip()
    options = record.get("options") or {}
    if answer.upper() in options and len(answer) == 1:
        return _choice(record, options, answer.upper())
    return float(normalize_short(prediction_of(record)) == normalize_short(answer))


TOLERANT_JUDGES: dict[str, Callable[[Mapping[str, Any]], float]] = {
    "mme": lambda r: float(yes_no(prediction_of(r)) == str(r["answer"]).strip().lower()),
    "mmbench_en": lambda r: _choice(r, r["options"], r["answer"]),
    "mmbench_cn": lambda r: _choice(r, r["options"], r["answer"]),
    "gqa": lambda r: float(normalize_short(prediction_of(r)) == normalize_short(str(r["answer"]))),
    "scienceqa_img": _tolerant_scienceqa,
    "ai2d": _letter,
    "textvqa": lambda r: vqa_accuracy(prediction_of(r), list(r["answers"])),
    "mmvp": _letter,
    "realworldqa": _tolerant_realworldqa,
    "cvbench_coco": _letter,
    "cvbench_ade20k": _letter,
    "cvbench_omni3d": _letter,
}
"""covft's tolerant judge per benchmark (the suite protocol's rules)."""
JUDGES = {"official": OFFICIAL_JUDGES, "tolerant": TOLERANT_JUDGES}

# --------------------------------------------------------------------------- aggregation

Judge = Callable[[Mapping[str, Any]], float]


def _percent(hits: float, total: int) -> float:
    return 100.0 * hits / total if total else 0.0


def _result(benchmark: str, value: float, metric: str, n: int, breakdown: dict) -> dict:
    return {"benchmark": benchmark, "score": value, "metric": metric, "n": n, "breakdown": breakdown}


def _by_key(records: Iterable[dict], flags: Iterable[float], key: str) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for record, flag in zip(records, flags, strict=True):
        groups[str(record.get(key, ""))].append(flag)
    return {name: _percent(sum(v), len(v)) for name, v in sorted(groups.items())}


def _mme(name: str, records: list[dict], judge: Judge) -> dict:
    """Per subtask acc and acc+ (every question of an image right), in percent; score = sum of
    acc + acc+ over the subtasks present."""
    tasks: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        tasks[record["category"]][record["image_id"]].append(judge(record))
    breakdown = {}
    for task, images in tasks.items():
        flags = [flag for per_image in images.values() for flag in per_image]
        acc = _percent(sum(flags), len(flags))
        acc_plus = _percent(sum(all(v) for v in images.values()), len(images))
        breakdown[task] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
    total = sum(entry["score"] for entry in breakdown.values())
    return _result(name, total, "sum over subtasks of acc + acc+", len(records), breakdown)


def _circular(name: str, records: list[dict], judge: Judge) -> dict:
    """A question (``index``) counts only if all its records (its circular copies) are right; the
    breakdown adds the non-circular accuracy of the ``rotation`` 0 records and the per-category
    circular accuracy."""
    questions: dict[str, list[float]] = defaultdict(list)
    categories: dict[str, str] = {}
    first_rotation: dict[str, float] = {}
    for record in records:
        right = judge(record)
        index = str(record["index"])
        questions[index].append(right)
        categories[index] = str(record.get("category", ""))
        if int(record.get("rotation", 0)) == 0:
            first_rotation[index] = right
    passed = {index: all(flags) for index, flags in questions.items()}
    per_category: dict[str, list[bool]] = defaultdict(list)
    for index, ok in passed.items():
        per_category[categories[index]].append(ok)
    breakdown = {
        "questions": len(questions),
        "vanilla": _percent(sum(first_rotation.values()), len(first_rotation)),
        "per_category": {c: _percent(sum(v), len(v)) for c, v in sorted(per_category.items())},
    }
    return _result(
        name, _percent(sum(passed.values()), len(passed)), "circular accuracy (%)", len(records), breakdown
    )


def _pairs(name: str, records: list[dict], judge: Judge) -> dict:
    """Percent of pairs (``pair_id``) with both questions right; question accuracy in the breakdown."""
    pairs: dict[str, list[float]] = defaultdict(list)
    flags = []
    for record in records:
        right = judge(record)
        flags.append(right)
        pairs[str(record["pair_id"])].append(right)
    passed = [all(v) for v in pairs.values()]
    breakdown = {"pairs": len(pairs), "question_accuracy": _percent(sum(flags), len(flags))}
    return _result(name, _percent(sum(passed), len(passed)), "pair accuracy (%)", len(records), breakdown)


def _mean(metric: str, by: str | None = None) -> Callable[[str, list[dict], Judge], dict]:
    def aggregate(name: str, records: list[dict], judge: Judge) -> dict:
        flags = [judge(r) for r in records]
        breakdown = {f"per_{by}": _by_key(records, flags, by)} if by else {}
        return _result(name, _percent(sum(flags), len(flags)), metric, len(records), breakdown)

    return aggregate


AGGREGATES: dict[str, Callable[[str, list[dict], Judge], dict]] = {
    "mme": _mme,
    "mmbench_en": _circular,
    "mmbench_cn": _circular,
    "gqa": _mean("exact match (%)"),
    "scienceqa_img": _mean("accuracy (%)"),
    "ai2d": _mean("accuracy (%)"),
    "textvqa": _mean("VQA accuracy (%)"),
    "mmvp": _pairs,
    "realworldqa": _mean("accuracy (%)"),
    "cvbench_coco": _mean("accuracy (%)", "task"),
    "cvbench_ade20k": _mean("accuracy (%)", "task"),
    "cvbench_omni3d": _mean("accuracy (%)", "task"),
}


def score(benchmark: str, records: list[dict]) -> dict:
    """Score generation records of one benchmark by their protocol's rules (module docstring)."""
    from covft.eval.protocol import protocol_of

    if benchmark not in AGGREGATES:
        raise KeyError(f"no scorer for benchmark {benchmark!r}; known: {', '.join(AGGREGATES)}")
    if not records:
        raise ValueError(f"score({benchmark!r}): no records to score")
    records = list(records)
    rules = protocol_of(records, benchmark).scoring
    result = AGGREGATES[benchmark](benchmark, records, JUDGES[rules][benchmark])
    return {**result, "rules": rules}
