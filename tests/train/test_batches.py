"""The DataLoader's collate_fn builds the model batches, in worker processes too."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file

import covft
from covft.data.dataset import LlavaDataset
from covft.train import train
from covft.train.batches import IndexedDataset, make_collate
from tests.train.conftest import tiny_config


def test_the_collate_fn_is_picklable_and_builds_the_models_batch(tiny_data: dict[str, Path]) -> None:
    model = covft.build_model("tiny-test", vision_layers=2, seed=0)
    covft.apply_vft(model, "covft")
    config = tiny_config(tiny_data, Path("unused"))
    dataset = LlavaDataset(config.data.train, config.data.image_folder)
    collate = make_collate(model, dataset, config, vision_every_batch=False)
    copy = pickle.loads(pickle.dumps(collate))  # what a spawned DataLoader worker receives
    items = [IndexedDataset(dataset)[i] for i in range(3)]
    expected = model.collate([sample for _, sample in items])
    for built in (collate(items), copy(items)):
        assert built.problems == [] and built.ids == [str(sample["id"]) for _, sample in items]
        assert built.batch.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(built.batch[key], value), key


def test_workers_give_the_same_run_as_the_main_process(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"workers{workers}"
        runs[workers] = train(tiny_config(tiny_data, out, f"data.num_workers={workers}", steps=3))
    assert runs[2].loss_history == runs[0].loss_history
    expected, actual = (load_file(str(tmp_path / f"workers{w}" / "model.safetensors")) for w in (0, 2))
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
