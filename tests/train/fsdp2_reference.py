"""What ``fsdp2_worker.py`` and its one-process reference share: model, data, schedule."""

from __future__ import annotations

import torch
from PIL import Image

import covft

LR = 1e-3
STEPS = 3
COLOURS = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (200, 200, 10)]
NAMES = ["red", "green", "blue", "yellow"]


def build():
    """The CoVFT tiny-test model every run starts from (the same weights in every process)."""
    model = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny", seed=0)
    # "feeding": every trainable parameter gets a gradient, so every one has optimizer state to save
    covft.apply_vft(model, "covft", train_layernorms="feeding")
    model.ensure_text_encoder()
    return model


def step_samples(step: int) -> list[dict]:
    """The 4 image samples of one optimizer step (process r takes samples 2r and 2r+1)."""
    samples = []
    for k in range(4):
        index = (step + k) % 4
        samples.append(
            {
                "id": f"s{step}-{k}",
                "image": Image.new("RGB", (24 + 4 * k, 24), COLOURS[index]),
                "conversations": [
                    {"from": "human", "value": f"<image>\nWhat colour is shape {k}?"},
                    {"from": "gpt", "value": NAMES[index]},
                ],
            }
        )
    return samples


def one_process_losses() -> list[float]:
    """The same steps in one unsharded process: two micro-batches of 2 samples per step."""
    model = build()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    losses = []
    for step in range(STEPS):
        samples = step_samples(step)
        total = 0.0
        for half in (samples[:2], samples[2:]):
            loss = model(**model.collate(half)).loss
            (loss / 2).backward()
            total += float(loss.detach()) / 2
        optimizer.step()
        optimizer.zero_grad()
        losses.append(total)
    return losses
