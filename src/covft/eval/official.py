"""The official scoring rules: how each benchmark's own script judges one prediction.

Each ``judge_<benchmark>(record) -> float`` returns 1.0 / 0.0 (TextVQA: the VQA accuracy in
[0, 1]) for a record (an item plus ``prediction``), following the script the paper's numbers come
from; docs/benchmarks.md cites each. :mod:`covft.eval.scoring` aggregates the judgements (MME's
acc + acc+, MMBench's circular groups, MMVP's pairs), identically for these rules and for covft's
tolerant suite rules.

Quirks of the scripts are kept on purpose, since they move real scores: GQA compares the raw
lower-cased answer, ScienceQA accepts the bare letter only, AI2D and CV-Bench read the first
character of whatever remains after stripping, TextVQA's period rule strips a period after a
digit ("10." -> "10") because of a look-ahead typo in the EvalAI processor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from covft.eval.benchmarks.base import LETTERS


def prediction_of(record: Mapping[str, Any]) -> str:
    """The record's prediction as text (an error names the record when generation is missing)."""
    if "prediction" not in record:
        raise ValueError(f"record {record.get('id')!r} has no 'prediction'; run generation first")
    prediction = record["prediction"]
    return "" if prediction is None else str(prediction)


# --------------------------------------------------------------------------- MME


def mme_label(prediction: str) -> str:
    """MME's eval_tool/calculation.py ``parse_pred_ans`` on a lower-cased prediction: "yes" / "no"
    if it is exactly that, else the first of them found in its first four characters, else "other"."""
    text = prediction.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def judge_mme(record: Mapping[str, Any]) -> float:
    return float(mme_label(prediction_of(record)) == str(record["answer"]).lower())


# --------------------------------------------------------------------------- MMBench (VLMEvalKit)

_VLMEVAL_PUNCTUATION = ".()[],:;!*#{}"
_VLMEVAL_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_VLMEVAL_VERBOSE = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def vlmeval_option(prediction: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer_option`` (vlmeval/utils/matching_util.py): the one option letter
    that stands as a word among the prediction's last four words, or "Z" for a refusal."""
    if "Failed to obtain answer via API" in prediction:
        return None
    if any(refusal in prediction for refusal in _VLMEVAL_REFUSALS):
        return "Z"
    words = prediction.translate(str.maketrans(_VLMEVAL_PUNCTUATION, " " * len(_VLMEVAL_PUNCTUATION))).split()
    present = [letter for letter in options if letter in words]
    if len(present) == 1:
        if words.index(present[0]) > len(words) - 5:
            return present[0]
    elif not present and "Z" in words:
        return "Z"
    verbose = _VLMEVAL_VERBOSE.search(prediction)
    if verbose and verbose.group(1).upper() in options:
        return verbose.group(1).upper()
    return None


def vlmeval_text(prediction: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer_text``: the one option whose text the (short) prediction contains."""
    text = prediction.lower()
    if len(text) > 2 * sum(len(str(value)) for value in options.values()):
        return None
    found = [letter for letter, value in options.items() if str(value).lower() in text]
    return found[0] if len(found) == 1 else None


def vlmeval_choice(prediction: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer`` (exact matching, no LLM judge): option letter, else option text."""
    return vlmeval_option(prediction, options) or vlmeval_text(prediction, options)


def judge_mmbench(record: Mapping[str, Any]) -> float:
    return float(vlmeval_choice(prediction_of(record), record["options"]) == record["answer"])


# --------------------------------------------------------------------------- GQA


def judge_gqa(record: Mapping[str, Any]) -> float:
    """LLaVA's scripts/convert_gqa_for_eval.py (trailing periods off, lower case), then GQA's
    eval.py (``predicted == gold``)."""
    return float(prediction_of(record).rstrip(".").lower() == str(record["answer"]))


# --------------------------------------------------------------------------- ScienceQA

_SQA_OPTIONS = ("A", "B", "C", "D", "E")  # eval_science_qa.py's --options list
_SQA_PHRASE = re.compile(r"The answer is ([A-Z]).")


def sqa_letter(prediction: str) -> str | None:
    """LLaVA's llava/eval/eval_science_qa.py: the prediction is a letter A-E, or starts with
    ``"X. "``, or holds exactly one "The answer is X." (any character after X)."""
    if prediction in _SQA_OPTIONS:
        return prediction
    if len(prediction) >= 3 and prediction[0] in _SQA_OPTIONS and prediction[1:3] == ". ":
        return prediction[0]
    found = _SQA_PHRASE.findall(prediction)
    return found[0] if len(found) == 1 else None


def judge_scienceqa(record: Mapping[str, Any]) -> float:
    letter = sqa_letter(prediction_of(record))
    choices = _SQA_OPTIONS[: len(record["choices"])]
    return float(letter is not None and letter in choices and choices.index(letter) == int(record["answer"]))


# --------------------------------------------------------------------------- Cambrian-1 / CoVFT release scripts

_ANSWER_KEYWORDS = ("answer is", "answer is:", "answer:")


def after_answer_keywords(prediction: str) -> str:
    """Lower-cased, stripped, and cut after "answer is" / "answer is:" / "answer:" (each in turn)."""
    text = prediction.lower().strip()
    for keyword in _ANSWER_KEYWORDS:
        if keyword in text:
            text = text.split(keyword)[-1]
    return text


def cambrian_mcq(prediction: str, strip: str, first_char: bool) -> str:
    """``extract_mcq_answer`` of the release's ai2d / mmvp / coco / ade / omni ``*_test.py``:
    trailing ``strip`` characters, a leading "(" and a trailing ")" off; with ``first_char``
    (all but MMVP) only the first character of what is left."""
    text = after_answer_keywords(prediction).strip().rstrip(strip).lstrip("(").rstrip(")")
    return text[0] if first_char and len(text) > 1 else text


def judge_ai2d(record: Mapping[str, Any]) -> float:
    """ai2d_test.py: the extracted letter a-d becomes its index, compared with the answer index."""
    extracted = cambrian_mcq(prediction_of(record), ".:,", first_char=True)
    index = {"a": "0", "b": "1", "c": "2", "d": "3"}.get(extracted, extracted)
    return float(index == str(LETTERS.index(record["answer"])))


def judge_mmvp(record: Mapping[str, Any]) -> float:
    """mmvp_test.py: the extraction equals the answer letter or the answer's option text."""
    extracted = cambrian_mcq(prediction_of(record), ".:,", first_char=False)
    answer = str(record["answer"]).lower()
    return float(extracted in (answer, str(record["options"][record["answer"]]).lower()))


def judge_realworldqa(record: Mapping[str, Any]) -> float:
    """realworldqa_test.py ``extract_single_answer``: the first word after trailing periods go,
    compared with the lower-cased answer (an empty prediction is wrong)."""
    words = after_answer_keywords(prediction_of(record)).strip().rstrip(".").split()
    return float(bool(words) and words[0] == str(record["answer"]).lower())


def judge_cvbench_2d(record: Mapping[str, Any]) -> float:
    """coco_test.py / ade_test.py: the extracted character equals the answer letter."""
    return float(cambrian_mcq(prediction_of(record), ".", first_char=True) == record["answer"].lower())


def judge_cvbench_3d(record: Mapping[str, Any]) -> float:
    """omni_test.py: also "." ":" "," stripped, and the option text accepted too."""
    extracted = cambrian_mcq(prediction_of(record), ".:,", first_char=True)
    return float(extracted in (record["answer"].lower(), str(record["options"][record["answer"]])))


# --------------------------------------------------------------------------- TextVQA (EvalAI / m4c)

#: The EvalAI answer processor's contraction map (m4c_evaluator.py in LLaVA and the CoVFT release),
#: as "written:replacement" pairs; the map is applied word by word after lower-casing, so its
#: capitalised keys never match, as in the original.
_CONTRACTION_PAIRS = (
    "aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've "
    "couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've "
    "hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's "
    "howd:how'd howll:how'll hows:how's Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd "
    "itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't "
    "mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've "
    "neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at "
    "'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've "
    "shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd "
    "somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll "
    "somebodys:somebody's someoned:someone'd someoned've:someone'd've someone'dve:someone'd've "
    "someonell:someone'll someones:someone's somethingd:something'd somethingd've:something'd've "
    "something'dve:something'd've somethingll:something'll thats:that's thered:there'd "
    "thered've:there'd've there'dve:there'd've therere:there're theres:there's theyd:they'd "
    "theyd've:they'd've they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas "
    "wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've werent:weren't whatll:what'll "
    "whatre:what're whats:what's whatve:what've whens:when's whered:where'd wheres:where's "
    "whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's "
    "whove:who've whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't "
    "wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll "
    "yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've "
    "you'dve:you'd've youll:you'll youre:you're youve:you've"
)
EVALAI_CONTRACTIONS = dict(pair.split(":", 1) for pair in _CONTRACTION_PAIRS.split())
EVALAI_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
EVALAI_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_EVALAI_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: "(?!<=" is a look-ahead, so "10." loses its period
_EVALAI_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")


def evalai_answer(answer: str) -> str:
    """The EvalAI / m4c ``EvalAIAnswerProcessor`` (LLaVA's llava/eval/m4c_evaluator.py) exactly."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for mark in EVALAI_PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or _EVALAI_COMMA.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    out = _EVALAI_PERIOD.sub("", out, 32)  # the original passes re.UNICODE (32) as the count
    words = [EVALAI_NUMBERS.get(word, word) for word in out.lower().split()]
    words = [EVALAI_CONTRACTIONS.get(word, word) for word in words if word not in ("a", "an", "the")]
    return " ".join(words)


def textvqa_accuracy(prediction: str, answers: list[str]) -> float:
    """m4c's ``TextVQAAccuracyEvaluator``: over the leave-one-annotator-out subsets, the mean of
    min(#references equal to the processed prediction / 3, 1)."""
    if not answers:
        raise ValueError("textvqa_accuracy needs at least one reference answer")
    predicted = evalai_answer(prediction)
    references = [evalai_answer(a) for a in answers]
    scores = [
        min(sum(ref == predicted for j, ref in enumerate(references) if j != left_out) / 3.0, 1.0)
        for left_out in range(len(references))
    ]
    return sum(scores) / len(scores)


def judge_textvqa(record: Mapping[str, Any]) -> float:
    return textvqa_accuracy(prediction_of(record), list(record["answers"]))


JUDGES: dict[str, Callable[[Mapping[str, Any]], float]] = {
    "mme": judge_mme,
    "mmbench_en": judge_mmbench,
    "mmbench_cn": judge_mmbench,
    "gqa": judge_gqa,
    "scienceqa_img": judge_scienceqa,
    "ai2d": judge_ai2d,
    "textvqa": judge_textvqa,
    "mmvp": judge_mmvp,
    "realworldqa": judge_realworldqa,
    "cvbench_coco": judge_cvbench_2d,
    "cvbench_ade20k": judge_cvbench_2d,
    "cvbench_omni3d": judge_cvbench_3d,
}
"""Official judge per benchmark."""
