"""Questions whose answer must be read from the image: MMVP text pairs and rule questions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from covft.recipes.world.mmvp import MMVP_DETAILS, build_mmvp
from covft.recipes.world.render import draw_scene, sign_text_mask
from covft.recipes.world.scene import Scene
from covft.recipes.world.scene_questions import rule_question
from covft.recipes.world.suite import BUILDERS
from covft.recipes.world.suite_items import SuiteBuilder
from covft.recipes.world.vocab import COLORS, SHAPES, plural

SIZE = 64
RULE_HINT = re.compile(r"In this world, (.+?) are (\w+); all other (?:objects|shapes) are (\w+)\.")
SIZE_HINT = re.compile(r"In this world, large objects are (\w+); small and medium objects are (\w+)\.")
PLURALS = {plural(s): s for s in SHAPES}


def text_on_board(scene: Scene) -> bool:
    mask = sign_text_mask(scene, SIZE)
    x1, y1, x2, y2 = (round(v * SIZE) for v in scene.sign.box)
    return bool(mask.sum() > 0 and mask[y1:y2, x1:x2].sum() == mask.sum())


def test_mmvp_text_pairs_differ_in_exactly_one_character_that_fits_the_sign(tmp_path: Path) -> None:
    builder = SuiteBuilder(tmp_path, SIZE, {}, set())
    text_detail = MMVP_DETAILS.index("text")
    one_character = 0
    for q in range(text_detail, len(MMVP_DETAILS) * 150, len(MMVP_DETAILS)):
        items = build_mmvp(builder, np.random.default_rng([7, q]), q)
        assert {item["detail"] for item in items} == {"text"}
        a, b = (Scene.from_dict(ann["scene"]) for ann in builder.annotations[-2:])
        ta, tb = a.sign.text, b.sign.text
        assert len(ta) == len(tb), (ta, tb)
        assert sum(x != y for x, y in zip(ta, tb, strict=True)) == 1, (ta, tb)
        assert a.sign.box == b.sign.box and text_on_board(a) and text_on_board(b), (ta, tb)
        assert not re.fullmatch(r"[A-H]", tb)
        one_character += len(ta) == 1
    assert one_character > 0


def rule_truth(hint: str, obj) -> tuple[str, str]:
    """(the rule's attribute, the answer) for ``obj`` under ``hint``."""
    sized = SIZE_HINT.fullmatch(hint)
    if sized:
        return "size", sized[1] if obj.size == "large" else sized[2]
    match = RULE_HINT.fullmatch(hint)
    assert match, hint
    first, second = match[1].split(" and ")
    if second.endswith(" objects"):
        colors = {first, second.removesuffix(" objects")}
        return "color", match[2] if obj.color in colors else match[3]
    shapes = {PLURALS[first], PLURALS[second]}
    return "shape", match[2] if obj.shape in shapes else match[3]


def referred(scene: Scene, question: str) -> list[int]:
    """Indices of the objects the question's "the <reference> <positive> or <negative>" can mean."""
    ref = re.fullmatch(r"Is the (.+) \w+ or \w+\?", question)[1]
    words = ref.split()
    if words[-1] == "object":
        words = words[:-1]
    return [i for i, o in enumerate(scene.objects) if set(words) <= {o.color, o.shape}]


def check_rule_question(scene: Scene, question: str, hint: str, answer: str, wrong: str, target: int) -> str:
    obj = scene.objects[target]
    attribute, truth = rule_truth(hint, obj)
    assert answer == truth and wrong != answer
    assert referred(scene, question) == [target], question
    vocabulary = {"color": COLORS, "shape": SHAPES, "size": ("small", "medium", "large")}[attribute]
    stated = [w for w in vocabulary if re.search(rf"\b{w}s?\b", question)]
    assert not stated, (hint, question)
    return attribute


def test_rule_questions_leave_the_rule_attribute_to_the_image() -> None:
    modes: dict[str, int] = {}
    for seed in range(400):
        rng = np.random.default_rng([5, seed])
        scene, rendering = draw_scene(rng, ("objects", "clutter")[seed % 2], SIZE)
        qa = rule_question(scene, rendering, rng)
        if qa is None:
            continue
        assert qa.targets and len(qa.targets) == 1
        attribute = check_rule_question(
            scene, qa.question, qa.hint, qa.answer, qa.candidates[0], qa.targets[0]
        )
        modes[attribute] = modes.get(attribute, 0) + 1
        for claim in (qa.yes_question, qa.no_question, qa.terse):
            assert obj_word_free(claim, scene.objects[qa.targets[0]], attribute)
    assert set(modes) == {"color", "shape", "size"} and min(modes.values()) > 50, modes


def obj_word_free(text: str, obj, attribute: str) -> bool:
    return not re.search(rf"\b{getattr(obj, attribute)}\b", text)


def test_suite_rule_items_need_the_image(tmp_path: Path) -> None:
    builder = SuiteBuilder(tmp_path, SIZE, {}, set())
    for q in range(40):
        (item,) = BUILDERS["scienceqa_img"](builder, np.random.default_rng([3, q]), q)
        scene = Scene.from_dict(builder.annotations[-1]["scene"])
        hint, question = item["context"].split("\n")[:2]
        answer = item["choices"][item["answer"]]
        wrong = item["choices"][1 - item["answer"]]
        (target,) = referred(scene, question)
        check_rule_question(scene, question, hint.removeprefix("Context: "), answer, wrong, target)
