"""Training-file formats: LLaVA, messages with text, messages with parts; detected, converted, checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from covft.data.dataset import LlavaDataset
from covft.data.errors import BadSampleError, MultiImageNotSupportedError
from covft.data.formats import MixedFormatsError, record_format

QUESTION, ANSWER, FOLLOW_UP, SECOND = "What is on the bus?", "A poster.", "Which colour?", "Red."
LLAVA = [
    {
        "id": "bus",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": f"<image>\n{QUESTION}"},
            {"from": "gpt", "value": ANSWER},
            {"from": "human", "value": FOLLOW_UP},
            {"from": "gpt", "value": SECOND},
        ],
    },
    {"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
]
MESSAGES_TEXT = [
    {
        "id": "bus",
        "messages": [
            {"role": "user", "content": f"<image>\n{QUESTION}"},
            {"role": "assistant", "content": ANSWER},
            {"role": "user", "content": FOLLOW_UP},
            {"role": "assistant", "content": SECOND},
        ],
        "images": ["a.png"],
    },
    {
        "id": "text",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    },
]


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


MESSAGES_PARTS = [
    {
        "id": "bus",
        "messages": [
            {"role": "user", "content": [{"type": "image"}, text(QUESTION)]},
            {"role": "assistant", "content": [text(ANSWER)]},
            {"role": "user", "content": [text(FOLLOW_UP)]},
            {"role": "assistant", "content": [text(SECOND)]},
        ],
        "images": ["a.png"],
    },
    {
        "id": "text",
        "messages": [
            {"role": "user", "content": [text("Hi")]},
            {"role": "assistant", "content": [text("Hello.")]},
        ],
    },
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(images / name)
    return images


def write(path: Path, records: list[Any]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def content(data: LlavaDataset) -> list[tuple[str, list[dict[str, str]], tuple[str, ...]]]:
    return [(r.sample_id, r.conversations, r.images) for r in data.records]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_every_format_reads_as_its_llava_equivalent(tmp_path: Path, folder: Path, suffix: str) -> None:
    llava = LlavaDataset(write(tmp_path / f"llava{suffix}", LLAVA), folder)
    sharegpt = [
        {k if k != "image" else "images": v for k, v in r.items()} for r in LLAVA
    ]  # LLaMA-Factory's key
    inline = json.loads(json.dumps(MESSAGES_PARTS))
    inline[0]["messages"][0]["content"][0]["image"] = "a.png"
    del inline[0]["images"]
    swift = json.loads(json.dumps(MESSAGES_TEXT))
    swift[0]["images"] = [{"path": "a.png"}]  # ms-swift's dict form
    cases = {
        "llava": sharegpt,
        "messages-text": MESSAGES_TEXT,
        "messages-parts": MESSAGES_PARTS,
    }
    expected = content(llava)
    assert expected[0][2] == ("a.png",) and len(expected) == 2
    for name, records in [*cases.items(), ("messages-parts", inline), ("messages-text", swift)]:
        path = write(tmp_path / f"{name}{suffix}", records)
        data = LlavaDataset(path, folder)
        assert content(data) == expected, name
        assert data.formats == {str(path): name}
        assert data[0]["image"].size == (8, 8) and data[1]["image"] is None


def test_the_format_is_detected_per_record_shape() -> None:
    assert [record_format(r) for r in (LLAVA[0], MESSAGES_TEXT[0], MESSAGES_PARTS[0])] == [
        "llava",
        "messages-text",
        "messages-parts",
    ]
    assert record_format({"messages": []}) is None
    assert record_format([1]) is None


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_a_file_mixing_formats_is_refused_at_the_first_offending_record(
    tmp_path: Path, folder: Path, policy: str
) -> None:
    path = write(tmp_path / "mixed.jsonl", [MESSAGES_TEXT[1], MESSAGES_TEXT[0], MESSAGES_PARTS[1], LLAVA[1]])
    with pytest.raises(MixedFormatsError) as caught:
        LlavaDataset(path, folder, on_bad_sample=policy)  # type: ignore[arg-type]
    assert str(caught.value).startswith(
        f"in {path} (record 3): record is in the 'messages-parts' format but the file's record 1 is "
        "'messages-text'; a file holds one format"
    )


def bad_messages(tmp_path: Path, folder: Path, records: list[Any]) -> str:
    first = MESSAGES_PARTS[1] if record_format(records[0]) == "messages-parts" else MESSAGES_TEXT[1]
    path = write(tmp_path / "bad.json", [first, *records])
    with pytest.raises(BadSampleError) as caught:
        LlavaDataset(path, folder)
    assert f"in {path} (record 2)" in str(caught.value)
    return caught.value.reason


def test_bad_messages_are_named_by_file_and_record(tmp_path: Path, folder: Path) -> None:
    user, answer = {"role": "user", "content": "<image>\nQ?"}, {"role": "assistant", "content": "A."}
    parts_user = {"role": "user", "content": [{"type": "image"}, {"type": "image"}, text("Q?")]}
    parts_answer = {"role": "assistant", "content": [text("A.")]}
    reasons = {
        "system": (
            {"messages": [{"role": "system", "content": "Be brief."}, user, answer], "images": ["a.png"]}
        ),
        "role": ({"messages": [{"role": "human", "content": "Q?"}, answer]}),
        "count": ({"messages": [user, answer], "images": ["a.png", "b.png"]}),
        "few": ({"messages": [user, answer]}),
        "parts": ({"messages": [parts_user, parts_answer], "images": ["a.png"]}),
        "part": ({"messages": [{"role": "user", "content": [{"type": "video"}]}, parts_answer]}),
        "bytes": ({"messages": [user, answer], "images": [{"bytes": "..."}]}),
        "styles": ({"messages": [user, parts_answer]}),
    }
    got = {name: bad_messages(tmp_path, folder, [raw]) for name, raw in reasons.items()}
    assert got["system"].startswith("message 1 is a system message; covft's conversation templates supply")
    assert got["role"] == "message 1 has unknown role 'human'"
    assert got["count"] == "1 <image> placeholder(s) but 2 image(s)"
    assert got["few"] == "1 <image> placeholder(s) but 0 image(s)"
    assert got["parts"] == "2 image part(s) without an inline path but 1 entries in 'images'"
    assert got["part"] == "message 1 part 1 is not a text or image part: {'type': 'video'}"
    assert got["bytes"] == "'images' entry 1 is not a path: {'bytes': '...'}"
    assert got["styles"].startswith("'messages' is not a non-empty list of {role, content} messages")


def test_a_missing_image_in_a_messages_file_uses_the_skip_budget(tmp_path: Path, folder: Path) -> None:
    gone = json.loads(json.dumps(MESSAGES_PARTS[0])) | {"id": "gone", "images": ["gone.png"]}
    path = write(tmp_path / "d.json", [MESSAGES_PARTS[0], gone, MESSAGES_PARTS[1]])
    with pytest.raises(
        BadSampleError, match=rf"sample 'gone' in {path} \(record 2\): image file .*gone.png' not found"
    ):
        LlavaDataset(path, folder)
    data = LlavaDataset(path, folder, on_bad_sample="skip", max_skip_fraction=0.5)
    assert [r.sample_id for r in data.records] == ["bus", "text"] and data.skipped.total == 1
    with pytest.raises(BadSampleError, match=r"1 of 3 samples \(33.3%\) are unusable"):
        LlavaDataset(path, folder, on_bad_sample="skip", max_skip_fraction=0.2)


def test_a_multi_image_messages_record_keeps_its_images_in_order(tmp_path: Path, folder: Path) -> None:
    pair = {
        "id": "pair",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "image", "path": "b.png"}, text("Same?")],
            },
            {"role": "assistant", "content": [text("Yes.")]},
        ],
        "images": ["a.png"],
    }
    path = write(tmp_path / "d.jsonl", [MESSAGES_PARTS[1], pair])
    with pytest.raises(MultiImageNotSupportedError, match=rf"sample 'pair' in {path} \(record 2\): 2 images"):
        LlavaDataset(path, folder, max_images=1)
    data = LlavaDataset(path, folder)
    assert data.records[1].images == ("a.png", "b.png")
    assert data.records[1].conversations[0] == {"from": "human", "value": "<image>\n<image>\nSame?"}
