"""covft's tolerant answer extraction: a letter from free text, normalised short answers, yes/no.

The ``tolerant`` judges of :mod:`covft.eval.scoring` use these for suites such as the conflict
world's; the ``official`` judges (:mod:`covft.eval.official`) follow each benchmark's own script.
"""

from __future__ import annotations

import re
import string

from covft.eval.official import EVALAI_NUMBERS

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
