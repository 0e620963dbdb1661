"""Released checkpoints' geometries on the meta device: exact parameter counts, per part and with
CoVFT (the second half of the feeding blocks, 4 experts, CVE on a BERT-base text vector)."""

from __future__ import annotations

import pytest

import covft

# preset: (total, vision, projector, llm, feeding blocks, CoMoE blocks, CoVFT trainable vision)
COUNTS = {
    "llava-1.5-13b": (
        13_351_494_656,
        303_507_456,
        31_467_520,
        13_016_519_680,
        23,
        range(11, 23),
        529_007_664,
    ),
    "llava-next-7b": (7_063_431_168, 303_507_456, 20_983_808, 6_738_939_904, 23, range(11, 23), 529_007_664),
    "llava-ov-0.5b": (893_675_552, 397_747_744, 1_837_696, 494_090_112, 26, range(13, 26), 669_616_116),
}


@pytest.mark.parametrize("preset", sorted(COUNTS))
def test_released_geometry_counts_on_the_meta_device(preset):
    total, vision, projector, llm, feeding, blocks, trainable = COUNTS[preset]
    model = covft.build_model(preset, device="meta")
    assert model.num_parameters() == total  # tied embeddings (OneVision 0.5B) counted once
    assert [model.num_parameters(p) for p in ("vision", "projector", "llm")] == [vision, projector, llm]
    assert model.feeding_layers == feeding
    covft.apply_vft(model, "covft")
    assert model.routed_blocks == list(blocks)
    assert model.num_parameters("vision", trainable=True) == trainable
