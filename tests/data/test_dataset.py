"""LLaVA-format dataset: JSON/JSONL, lazy images, every bad input named; the grouped sampler."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from covft.data import dataset as dataset_module
from covft.data.dataset import LlavaDataset, SkippedSample, SkipReport
from covft.data.errors import BadSampleError, MultiImageNotSupportedError, TooManyBadSamplesError
from covft.data.records import IMAGE_MOVED_FIRST
from covft.data.sampler import GroupedBatchSampler


def record(
    sample_id: str, image: str | None = "a.png", question: str = "<image>\nWhat?", answer: str = "x"
) -> dict:
    rec: dict[str, Any] = {
        "id": sample_id,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }
    if image is not None:
        rec["image"] = image
    return rec


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (12, 8), (1, 2, 3)).save(images / "a.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(images / "b.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return images


def write_json(path: Path, records: list[Any]) -> Path:
    path.write_text(json.dumps(records, indent=1))
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_json_and_jsonl_load_the_same_samples(tmp_path: Path, folder: Path) -> None:
    records = [
        record("one"),
        record("text", image=None, question="Hi", answer="hello"),
        {
            "id": "multi",
            "image": "b.png",
            "conversations": [
                {"from": "human", "value": "Look.\n<image>"},
                {"from": "gpt", "value": "ok"},
                {"from": "human", "value": "And?"},
                {"from": "gpt", "value": "done"},
            ],
        },
    ]
    from_json = LlavaDataset(write_json(tmp_path / "d.json", records), folder)
    from_jsonl = LlavaDataset(write_jsonl(tmp_path / "d.jsonl", records), folder)
    assert len(from_json) == len(from_jsonl) == 3
    assert from_json.has_image == [True, False, True]
    for i in range(3):
        a, b = from_json[i], from_jsonl[i]
        assert a["id"] == b["id"] and a["conversations"] == b["conversations"]
    sample = from_json[0]
    assert isinstance(sample["image"], Image.Image) and sample["image"].mode == "RGB"
    assert sample["image"].size == (12, 8)  # padding to square is the collator's job
    assert from_json[1]["image"] is None
    assert len(from_json[2]["conversations"]) == 4


def test_images_are_loaded_lazily(tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = Image.open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> Image.Image:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(dataset_module.Image, "open", counting_open)
    data = LlavaDataset(write_json(tmp_path / "d.json", [record("a"), record("b", image="b.png")]), folder)
    assert opened == []
    data[1]
    assert opened == [str(folder / "b.png")]


def test_several_files_are_concatenated(tmp_path: Path, folder: Path) -> None:
    first = write_json(tmp_path / "1.json", [record("a")])
    second = write_jsonl(tmp_path / "2.jsonl", [record("b", image="b.png")])
    data = LlavaDataset([first, second], folder)
    assert [r.sample_id for r in data.records] == ["a", "b"]
    assert data.describe(1) == f"sample 'b' in {second} (record 1)"


def test_malformed_jsonl_names_file_and_line(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record("a")) + "\n" + '{"id": "b", "conversations": [\n')
    with pytest.raises(BadSampleError, match=r"d\.jsonl \(record 2\): line is not valid JSON") as info:
        LlavaDataset(path, folder)
    assert info.value.file == str(path) and info.value.line == 2 and info.value.fix


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path: Path, folder: Path) -> None:
    """JSON allows U+2028, U+2029 and U+0085 unescaped in strings: only newlines end a record."""
    answers = ["one\u2028two", "three\u2029four", "five\u0085six"]
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(record(f"r{i}", answer=a), ensure_ascii=False) for i, a in enumerate(answers)]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    data = LlavaDataset(path, folder)
    assert [r.sample_id for r in data.records] == ["r0", "r1", "r2"]
    assert [data[i]["conversations"][1]["value"] for i in range(3)] == answers


def test_the_image_moves_to_the_front_of_its_turn_as_llava_moves_it(tmp_path: Path, folder: Path) -> None:
    """LLaVA's preprocess_multimodal trains "Where is the cat?\n<image>" as "<image>\nWhere is the cat?"."""
    trailing = record("trailing", question="Where is the cat?\n<image>")
    middle = record("middle", question="Look: <image> what is it?")
    path = write_json(tmp_path / "d.json", [trailing, middle, record("first")])
    data = LlavaDataset(path, folder)
    questions = [r.conversations[0]["value"] for r in data.records]
    assert questions == ["<image>\nWhere is the cat?", "<image>\nLook:  what is it?", "<image>\nWhat?"]
    assert sorted(data.notes[IMAGE_MOVED_FIRST]) == ["middle", "trailing"]


def test_a_jsonl_file_holding_a_json_list_is_read_as_a_list(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps([record("a"), record("b")], indent=1))
    assert [r.sample_id for r in LlavaDataset(path, folder).records] == ["a", "b"]


def test_malformed_json_names_file_line_and_column(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n  {"id": "a", "conversations": []},\n  {"id": "b",, }\n]')
    with pytest.raises(BadSampleError, match=r"d\.json: file is not valid JSON .* at line 3, column \d+"):
        LlavaDataset(path, folder)


def test_a_file_not_starting_with_a_list_is_read_as_jsonl(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"id": "a",\n "conversations": [')
    with pytest.raises(BadSampleError, match=r"d\.json \(record 1\): line is not valid JSON"):
        LlavaDataset(path, folder)
    path.write_text(json.dumps(record("one"), indent=1))  # one record, pretty-printed
    with pytest.raises(BadSampleError, match=r"d\.json: file is a single JSON object spread over several"):
        LlavaDataset(path, folder)


def test_a_json_list_with_a_byte_order_mark_is_read_as_a_list(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([record("one"), record("two")], indent=1).encode())
    assert [r.sample_id for r in LlavaDataset(path, folder).records] == ["one", "two"]


def test_records_nested_in_an_object_are_named(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"version": 2, "data": [record("one")]}, indent=1))
    with pytest.raises(BadSampleError, match=r"JSON object with keys \['version', 'data'\].*under 'data'"):
        LlavaDataset(path, folder)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(json.dumps([record("caf\u00e9")], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(BadSampleError, match=r"d\.json: file is not UTF-8 text \(byte 0xe9"):
        LlavaDataset(path, folder)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            record("noanswer", answer="x") | {"conversations": [{"from": "human", "value": "<image> hi"}]},
            "no assistant turn",
        ),
        (record("two", question="<image> and <image>"), r"2 <image> placeholder\(s\) but 1 image"),
        (record("none", question="What?"), r"0 <image> placeholder\(s\) but 1 image"),
        (record("orphan", image=None), r"1 <image> placeholder\(s\) but 0 image"),
        (record("role") | {"conversations": [{"from": "bot", "value": "x"}]}, "unknown role 'bot'"),
        (record("missing", image="nowhere.png"), "image file .*nowhere.png' not found"),
        ({"id": "noconv"}, "no 'conversations' list"),
        ("just a string", "record is a str"),
    ],
)
def test_bad_records_are_named_with_file_record_and_fix(
    tmp_path: Path, folder: Path, bad: Any, message: str
) -> None:
    path = write_json(tmp_path / "d.json", [record("good"), bad])
    with pytest.raises(BadSampleError, match=message) as info:
        LlavaDataset(path, folder)
    error = info.value
    assert error.file == str(path) and error.line == 2 and error.fix
    if isinstance(bad, dict) and "id" in bad:
        assert f"sample {bad['id']!r}" in str(error)
    # the skip policy drops exactly that record and reports it
    data = LlavaDataset(path, folder, on_bad_sample="skip")
    assert [r.sample_id for r in data.records] == ["good"]
    assert data.skipped.total == 1 and str(error) in data.skipped.summary()


def test_corrupt_image_is_reported_when_loaded(tmp_path: Path, folder: Path) -> None:
    path = write_json(tmp_path / "d.json", [record("ok"), record("broken", image="corrupt.png")])
    data = LlavaDataset(path, folder)  # the file exists, so opening the dataset succeeds
    with pytest.raises(
        BadSampleError, match=r"sample 'broken' in .*d\.json \(record 2\): image file .* corrupt"
    ):
        data[1]
    skipping = LlavaDataset(path, folder, on_bad_sample="skip")
    marker = skipping[1]
    assert isinstance(marker, SkippedSample) and marker.error.sample_id == "broken"
    assert not isinstance(skipping[0], SkippedSample)


def test_image_deleted_after_opening_is_reported(tmp_path: Path, folder: Path) -> None:
    Image.new("RGB", (4, 4)).save(folder / "gone.png")
    data = LlavaDataset(write_json(tmp_path / "d.json", [record("gone", image="gone.png")]), folder)
    (folder / "gone.png").unlink()
    with pytest.raises(BadSampleError, match="sample 'gone'.*not found"):
        data[0]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` greyscale pixels, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_an_image_above_the_decompression_bomb_limit_is_a_named_bad_sample(
    tmp_path: Path, folder: Path
) -> None:
    """Case 1: Pillow's DecompressionBombError (not an OSError) is a bad sample, not a crash."""
    (folder / "huge.png").write_bytes(png_header_only(30000, 30000))
    path = write_json(tmp_path / "d.json", [record("bomb", image="huge.png")])
    with pytest.raises(
        BadSampleError, match=r"sample 'bomb' in .*d\.json \(record 1\): .* too large"
    ) as info:
        LlavaDataset(path, folder)[0]
    assert "decompression bomb" in str(info.value) and "Fix:" in str(info.value)
    marker = LlavaDataset(path, folder, on_bad_sample="skip")[0]
    assert isinstance(marker, SkippedSample) and marker.error.sample_id == "bomb"


def test_user_assistant_roles_and_a_one_image_list_become_llava_records(tmp_path: Path, folder: Path) -> None:
    """Case 2: what the loader accepts is what the templates and the collator take."""
    raw = {
        "id": "chat",
        "image": ["a.png"],
        "conversations": [
            {"from": "user", "value": "<image>\nWhat?"},
            {"from": "assistant", "value": "x"},
        ],
    }
    data = LlavaDataset(write_json(tmp_path / "d.json", [raw]), folder)
    sample = data[0]
    assert [t["from"] for t in sample["conversations"]] == ["human", "gpt"]
    assert isinstance(sample["image"], Image.Image)


def test_several_images_in_one_sample_are_refused_when_a_limit_is_set(tmp_path: Path, folder: Path) -> None:
    """Refused by name at open time, not mid-run with "2 placeholders for 1 image"."""
    raw = record("pair", image=None, question="<image> and <image>") | {"image": ["a.png", "b.png"]}
    path = write_json(tmp_path / "d.json", [record("ok"), raw])
    for policy in ("error", "skip"):  # not a bad sample: a limit the caller chose
        with pytest.raises(MultiImageNotSupportedError) as caught:
            LlavaDataset(path, folder, on_bad_sample=policy, max_images=1)
        assert str(caught.value).startswith(f"sample 'pair' in {path} (record 2): 2 images in one sample")
        assert "more than the 1 this dataset was opened for (max_images)" in str(caught.value)


def test_several_images_in_one_sample_load_as_a_list_in_order(tmp_path: Path, folder: Path) -> None:
    raw = record("pair", image=None, question="<image> and <image>") | {"image": ["a.png", "b.png"]}
    data = LlavaDataset(write_json(tmp_path / "d.json", [record("ok"), raw]), folder)
    assert [r.images for r in data.records] == [("a.png",), ("a.png", "b.png")]
    images = data[1]["image"]
    assert isinstance(images, list) and len(images) == 2
    assert all(isinstance(image, Image.Image) for image in images)
    assert isinstance(data[0]["image"], Image.Image)


def test_a_leading_gpt_turn_is_dropped_and_reported(tmp_path: Path, folder: Path) -> None:
    """Case 9: LLaVA drops a conversation's leading gpt turn; covft does too, and says so."""
    raw = record("lead") | {
        "conversations": [
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "<image>\nWhat?"},
            {"from": "gpt", "value": "x"},
        ]
    }
    data = LlavaDataset(write_json(tmp_path / "d.json", [raw, record("plain")]), folder)
    assert [t["value"] for t in data[0]["conversations"]] == ["<image>\nWhat?", "x"]
    assert data.notes == {"dropped a leading gpt turn (LLaVA drops it too)": ["lead"]}
    assert (
        data.notes_summary() == "dropped a leading gpt turn (LLaVA drops it too): 1 sample(s), e.g. ['lead']"
    )


@pytest.mark.parametrize(
    ("conversations", "message"),
    [
        ([("human", "<image>\nWhat?"), ("gpt", "  ")], r"turn 2 is an empty answer"),
        ([("human", "What?"), ("gpt", "<image> x")], r"turn 2 is an answer containing <image>"),
        ([("human", "<image>"), ("human", "What?"), ("gpt", "x")], r"turn 2 is a second human turn"),
        ([("gpt", "hi"), ("gpt", "<image> x")], r"no assistant turn after a human turn|second gpt"),
    ],
)
def test_answers_llava_would_train_on_silently_are_bad_samples(
    tmp_path: Path, folder: Path, conversations: list[tuple[str, str]], message: str
) -> None:
    """Case 9: an empty answer (EOS only), <image> inside an answer, turns out of order."""
    raw = record("odd") | {"conversations": [{"from": r, "value": v} for r, v in conversations]}
    path = write_json(tmp_path / "d.json", [record("good"), raw])
    with pytest.raises(BadSampleError, match=message) as info:
        LlavaDataset(path, folder)
    assert info.value.sample_id == "odd" and info.value.line == 2 and info.value.fix
    assert LlavaDataset(path, folder, on_bad_sample="skip").skipped.total == 1


def test_skipping_more_than_the_budget_stops_with_the_reasons(tmp_path: Path, folder: Path) -> None:
    """Case 8: a wrong image folder under skip must not shrink the data silently."""
    records = [record(f"s{i}", image="a.png" if i < 3 else f"missing{i}.png") for i in range(10)]
    path = write_json(tmp_path / "d.json", records)
    with pytest.raises(TooManyBadSamplesError) as info:
        LlavaDataset(path, folder, on_bad_sample="skip", max_skip_fraction=0.5)
    message = str(info.value)
    assert "7 of 10 samples (70.0%) are unusable, more than data.max_skip_fraction=0.5" in message
    assert "7 x image file '...' not found" in message and "data.image_folder" in message
    data = LlavaDataset(path, folder, on_bad_sample="skip", max_skip_fraction=0.7)  # within budget
    assert len(data) == 3 and data.num_records == 10


def test_the_skip_budget_counts_against_the_samples_a_fraction_keeps(tmp_path: Path, folder: Path) -> None:
    """Samples found bad while training count against what the run trains on, not every record
    in the files: data.fraction=0.1 must not loosen the budget tenfold."""
    path = write_json(tmp_path / "d.json", [record(f"s{i}") for i in range(100)])
    data = LlavaDataset(path, folder, on_bad_sample="skip", fraction=0.1)
    assert len(data) == data.drawn == 10 and data.num_records == 100
    report = SkipReport()
    for sample_id in ("s1", "s2"):
        report.add(BadSampleError("image file 'a.png' is corrupt or not an image", sample_id=sample_id))
    with pytest.raises(TooManyBadSamplesError, match=r"2 of 10 samples \(20\.0%\) are unusable"):
        data.check_skip_budget(report, 0.05)
    data.check_skip_budget(report, 0.2)  # within the budget
    report.merge(data.skipped)  # none skipped when the files were read: nothing changes
    whole = LlavaDataset(path, folder, on_bad_sample="skip")
    whole.check_skip_budget(report, 0.05)  # 2 of 100
    # one record refused when the file is read (its image is missing): 1 of 101 records, plus 2 of 10
    path = write_json(tmp_path / "e.json", [record(f"s{i}") for i in range(100)] + [record("gone", "x.png")])
    mixed = LlavaDataset(path, folder, on_bad_sample="skip", fraction=0.1)
    report.merge(mixed.skipped)
    with pytest.raises(TooManyBadSamplesError) as info:
        mixed.check_skip_budget(report, 0.2)
    assert "1 of the 101 records in the files and 2 of the 10 samples trained on (21.0% in all)" in str(
        info.value
    )


def test_empty_dataset_is_an_error(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(BadSampleError, match="dataset is empty"):
        LlavaDataset(write_json(tmp_path / "d.json", []), folder)
    empty_lines = tmp_path / "e.jsonl"
    empty_lines.write_text("\n\n")
    with pytest.raises(BadSampleError, match="dataset is empty"):
        LlavaDataset(empty_lines, folder)
    all_bad = write_json(tmp_path / "bad.json", [record("x", image="nowhere.png")])
    with pytest.raises(BadSampleError, match=r"dataset is empty.*1 bad sample\(s\) skipped"):
        LlavaDataset(all_bad, folder, on_bad_sample="skip")


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(BadSampleError, match="data file not found"):
        LlavaDataset(tmp_path / "nope.json")


# ---------------------------------------------------------------- sampler


def make_sampler(n: int = 23, **kwargs: Any) -> GroupedBatchSampler:
    has_image = [i % 3 != 0 for i in range(n)]
    lengths = [(i * 7) % 11 + 1 for i in range(n)]
    options = {"batch_size": 2, "grad_accum": 1, "seed": 5} | kwargs
    return GroupedBatchSampler(has_image, lengths, **options)


def test_order_is_a_function_of_seed_and_epoch() -> None:
    a, b = make_sampler(), make_sampler()
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    c = make_sampler(seed=6)
    c.set_epoch(3)
    assert list(a) != list(c)


def test_every_sample_is_seen_each_epoch_and_batches_are_full() -> None:
    sampler = make_sampler(batch_size=4)
    sampler.set_epoch(0)
    batches = list(sampler)
    assert len(batches) == sampler.steps_per_epoch == 6 == len(sampler)
    assert all(len(b) == 4 for b in batches)
    assert set().union(*map(set, batches)) == set(range(23))


@pytest.mark.parametrize(("images", "texts", "size"), [(7, 7, 4), (3, 3, 4), (5, 0, 2), (1, 9, 3), (2, 1, 8)])
def test_every_epoch_has_ceil_n_over_size_full_batches(images: int, texts: int, size: int) -> None:
    sampler = GroupedBatchSampler([True] * images + [False] * texts, [1] * (images + texts), batch_size=size)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = sampler.global_batches()
        assert len(batches) == sampler.steps_per_epoch == -(-(images + texts) // size)
        assert all(len(b) == size for b in batches)
        assert set().union(*map(set, batches)) == set(range(images + texts))


def test_batches_group_modality_and_sort_by_length() -> None:
    sampler = make_sampler(n=40, batch_size=4)
    sampler.set_epoch(1)
    mixed = 0
    for global_batch in sampler.global_batches():
        modalities = {sampler.has_image[i] for i in global_batch}
        mixed += len(modalities) > 1
        lengths = [sampler.lengths[i] for i in global_batch]
        assert lengths == sorted(lengths, reverse=True)
    assert mixed <= 1  # only the leftover batch may mix modalities


def test_resume_start_skips_consumed_micro_batches() -> None:
    sampler = make_sampler(grad_accum=2)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_start(5)
    assert list(sampler) == full[5:] and len(sampler) == len(full) - 5
    sampler.set_epoch(2)  # a new epoch starts from the beginning
    assert list(sampler) == full


def test_ranks_split_each_step_like_gradient_accumulation() -> None:
    """k processes with grad_accum=1 see per step what 1 process with grad_accum=k sees."""
    single = make_sampler(grad_accum=2)
    single.set_epoch(0)
    ranks = [make_sampler(world_size=2, rank=r) for r in range(2)]
    for r in ranks:
        r.set_epoch(0)
    single_batches = list(single)
    rank_batches = [list(r) for r in ranks]
    assert len(rank_batches[0]) == len(rank_batches[1]) == len(single_batches) // 2
    for step in range(len(rank_batches[0])):
        assert single_batches[2 * step] == rank_batches[0][step]
        assert single_batches[2 * step + 1] == rank_batches[1][step]


def test_without_grouping_the_order_is_a_plain_shuffle() -> None:
    sampler = make_sampler(group_by_modality_length=False, batch_size=5)
    sampler.set_epoch(0)
    flat = [i for b in sampler for i in b]
    assert len(flat) == 25 and set(flat) == set(range(23))
