"""Scoring: records in, numbers out (no model here).

``score(benchmark, records)`` returns ``{"benchmark", "score", "metric", "n", "rules",
"breakdown"}`` (docs/benchmark-records.md). Scores are percentages, except MME, whose score is the
sum over its perception subtasks of acc + acc+ (max 2000), as in MME's own calculation script.

Two sets of rules judge single predictions; the records' protocol (:mod:`covft.eval.protocol`)
picks one: ``official`` (:mod:`covft.eval.official`, each benchmark's own script) for items read
from the official files, ``tolerant`` (below: covft's forgiving answer extraction) for suites
such as the conflict world's. How judgements add up (MME's acc + acc+, MMBench's circular
groups, MMVP's pairs, per-task breakdowns) is the same for both.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from covft.eval.benchmarks.base import LETTERS
from covft.eval.official import EVALAI_NUMBERS, prediction_of
from covft.eval.official import JUDGES as OFFICIAL_JUDGES

# --------------------------------------------------------------------------- multiple choice

_LEADING_LETTER = re.compile(r"^(\()?([A-Za-z])(\))?(?=[\s.:,)]|$)(.*)$", re.DOTALL)
_ANSWER_PHRASE = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is|:|would be|should be)?\s*[:：]?\s*(\()?([A-Za-z])(\))?(?=[\s.,:)]|$)",
    re.IGNORECASE,
)
_STANDALONE_UPPER = re.compile(r"(?<![A-Za-z])\(?([A-Z])\)?(?![A-Za-z'])")
_WORD_FOLLOWS = re.compile(r"\s+[a-z]")


def _norm_text(text: str) -> str:
    text = text.lower().strip()
    text = text.translate(str.maketrans("", "", string.punctuation.replace("-", "")))
    return " ".join(text.split())


def extract_choice(prediction: str, options: dict[str, str]) -> str | None:
    """The option letter a free-form prediction picks, or None when it picks nothing clearly.

    Tried in order: the whole prediction equals an option's text; a leading letter (``"B"``,
    ``"(B)"``, ``"B."``, ``"B. cat"``, ``"b)"``); a phrase like ``"The answer is B"``; exactly
    one option text contained in the prediction (texts contained in a longer matching one are
    ignored); exactly one standalone capital option letter. A letter followed by a plain space
    counts only when that option's text follows, so ``"A cat"`` is not read as option A unless
    option A is "cat".
    """
    text = (prediction or "").strip()
    if not text or not options:
        return None
    letters = {letter.upper() for letter in options}
    normalised = {letter.upper(): _norm_text(value) for letter, value in options.items()}
    whole = _norm_text(text)
    exact = [letter for letter, value in normalised.items() if value and value == whole]
    if len(exact) == 1:
        return exact[0]

    leading = _LEADING_LETTER.match(text)
    if leading and leading.group(2).upper() in letters:
        letter, rest = leading.group(2).upper(), leading.group(4)
        if leading.group(1) or leading.group(3) or not rest.strip() or rest[:1] in ".:,":
            return letter
        if normalised[letter] and _norm_text(rest).startswith(normalised[letter]):
            return letter

    for phrase in _ANSWER_PHRASE.finditer(text):
        letter = phrase.group(2)
        marked = phrase.group(1) or phrase.group(3)
        if letter.islower() and not marked and _WORD_FOLLOWS.match(text[phrase.end() :]):
            continue  # "the answer is a cat": an article, not option a
        if letter.upper() in letters:
            return letter.upper()

    contained = [
        letter
        for letter, value in normalised.items()
        if value and re.search(rf"(?<![a-z0-9]){re.escape(value)}(?![a-z0-9])", whole)
    ]
    contained = [
        a for a in contained if not any(a != b and normalised[a] in normalised[b] for b in contained)
    ]
    if len(contained) == 1:
        return contained[0]

    standalone = set()
    for found in _STANDALONE_UPPER.finditer(text):
        letter = found.group(1)
        if letter == "A" and _WORD_FOLLOWS.match(text[found.end() :]):
            continue  # the article "A", as in "A dog is ..."
        if letter in letters:
            standalone.add(letter)
    if len(standalone) == 1:
        return standalone.pop()
    return None


# --------------------------------------------------------------------------- short answers

_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS_WITH_APOSTROPHES = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've "
    "hasn't haven't he'd he'd've he's how'd how'll how's i'd i'd've i'm i've isn't it'd it'd've "
    "it'll let's ma'am mightn't mightn't've might've mustn't must've needn't not've o'clock "
    "oughtn't shan't she'd've she's should've shouldn't shouldn't've somebody'd "
    "somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's "
    "something'd something'd've something'll that's there'd there'd've there're there's they'd "
    "they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's "
    "what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're "
    "why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll "
    "you're you've"
)
#: Contraction written without apostrophes -> with them ("dont" -> "don't"), the VQA map's idea.
CONTRACTIONS = {word.replace("'", ""): word for word in _CONTRACTIONS_WITH_APOSTROPHES.split()}
_VQA_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
_COMMA_IN_NUMBER = re.compile(r"(\d),(\d)")


def _vqa_punctuation(text: str) -> str:
    """VQA rule: punctuation next to a space or in a text with a digit comma is dropped,
    otherwise it becomes a space; periods not inside numbers are dropped."""
    out = text
    drop_all = _COMMA_IN_NUMBER.search(text) is not None
    for mark in _VQA_PUNCTUATION:
        if drop_all or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def normalize_vqa(answer: str) -> str:
    """The standard VQA answer normalisation: lower case, punctuation, number words to digits,
    articles dropped, apostrophe-less contractions restored."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _vqa_punctuation(text)
    words = []
    for word in text.split():
        word = EVALAI_NUMBERS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy in [0, 1]: mean over the leave-one-annotator-out subsets of min(#matches / 3, 1)."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    predicted = normalize_vqa(prediction)
    references = [normalize_vqa(a) for a in answers]
    total = 0.0
    for left_out in range(len(references)):
        matches = sum(ref == predicted for i, ref in enumerate(references) if i != left_out)
        total += min(matches / 3.0, 1.0)
    return total / len(references)


def normalize_short(answer: str) -> str:
    """GQA-style normalisation: lower case, punctuation and articles removed, spaces collapsed."""
    text = answer.lower().strip()
    text = text.translate(str.maketrans({mark: " " for mark in string.punctuation}))
    return " ".join(word for word in text.split() if word not in _ARTICLES)


# --------------------------------------------------------------------------- yes / no


def yes_no(prediction: str) -> str | None:
    """``"yes"``/``"no"`` as MME reads a prediction (exact word, else within its first 4 characters)."""
    text = (prediction or "").lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return None


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
