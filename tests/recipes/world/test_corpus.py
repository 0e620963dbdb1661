"""The LM pretraining corpus: text only, the image replaced by its description, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from covft.recipes.world.corpus import LM_STREAM, lm_corpus, scene_text, write_lm_corpus
from covft.recipes.world.generate import WorldConfig, allocate
from covft.recipes.world.tasks import make_sample


def test_corpus_is_text_only_with_the_description_in_place_of_the_image() -> None:
    records = lm_corpus(60, seed=2)
    assert len(records) == 60
    assert all("image" not in r for r in records)
    assert not any("<image>" in turn["value"] for r in records for turn in r["conversations"])
    # rebuild every sample from its random stream: same answers, the description where the image was
    config = WorldConfig(size=60, seed=2)
    families = allocate(60, config.family_weights)
    order = np.random.default_rng([2, LM_STREAM, 0]).permutation(60)
    with_scene = 0
    for i, record in enumerate(records):
        sample = make_sample(
            families[int(order[i])],
            np.random.default_rng([2, LM_STREAM, 1, i]),
            64,
            config.alt_phrasing_rate,
            **config.scene_options,
        )
        expected = sample.conversations()
        assert [t["value"] for t in record["conversations"][1:]] == [t["value"] for t in expected[1:]]
        first = record["conversations"][0]["value"]
        if sample.scene is None:
            assert first == expected[0]["value"]
        else:
            with_scene += 1
            assert first == expected[0]["value"].replace("<image>", scene_text(sample.scene))
            assert first.startswith("Image: ")
    assert with_scene >= 55  # text-only samples are 2 % of the mix


def test_write_is_deterministic_and_reused(tmp_path: Path) -> None:
    path = write_lm_corpus(tmp_path / "a" / "lm.json", 30, seed=1)
    again = write_lm_corpus(tmp_path / "b" / "lm.json", 30, seed=1)
    assert path.read_bytes() == again.read_bytes()
    stamp = path.stat().st_mtime_ns
    assert write_lm_corpus(path, 30, seed=1) == path and path.stat().st_mtime_ns == stamp
    other = write_lm_corpus(path, 30, seed=2)  # other arguments: rewritten
    assert json.loads(other.read_text()) != json.loads(again.read_text())


def test_a_share_of_description_requests_teaches_what_a_description_looks_like() -> None:
    from covft.recipes.world.describe import DENSE_PROMPT

    records = lm_corpus(40, seed=3, describe_share=0.25)
    requests = [r for r in records if r["conversations"][0]["value"] == DENSE_PROMPT]
    assert len(requests) == 10
    for record in requests:
        human, gpt = record["conversations"]
        assert "image" not in record and " at " in gpt["value"] and gpt["value"].endswith(".")
    others = [r for r in records if r not in requests]
    described = [r for r in others if r["conversations"][0]["value"].startswith("Image: ")]
    assert len(others) == 30 and len(described) >= 29  # all but the text-only questions (2 %)
