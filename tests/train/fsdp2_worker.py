"""One process of ``test_fsdp2.py``: covft's CoVFT model sharded with FSDP2 (``fully_shard``).

Run under ``torchrun --nproc_per_node 2`` on CPU (gloo). Every vision block, every decoder layer
and the root are sharded; three AdamW steps run with 2 image samples per process; a sharded
checkpoint (``torch.distributed.checkpoint``) is written after step 2, loaded into a freshly
built sharded model, and step 3 is redone from it. Rank 0 writes the losses as JSON to argv[1].
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import fully_shard

from tests.train.fsdp2_reference import LR, STEPS, build, step_samples


def sharded_model():
    model = build()
    for layer in [*model.encoder_layers, *model.llava.model.language_model.layers]:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    return model, optimizer


def train_step(model, optimizer, step: int, rank: int) -> float:
    samples = step_samples(step)[2 * rank : 2 * rank + 2]
    loss = model(**model.collate(samples)).loss
    loss.backward()  # FSDP2 averages the gradients over the processes
    optimizer.step()
    optimizer.zero_grad()
    mean = loss.detach().clone()
    dist.all_reduce(mean, op=dist.ReduceOp.AVG)
    return float(mean)


def main(out: str, checkpoint: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model, optimizer = sharded_model()
    losses = []
    for step in range(STEPS):
        if step == STEPS - 1:
            model_state, optim_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=checkpoint)
        losses.append(train_step(model, optimizer, step, rank))
    model, optimizer = sharded_model()  # a fresh process's view: new weights, new optimizer
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=checkpoint)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    resumed = train_step(model, optimizer, STEPS - 1, rank)
    if rank == 0:
        with open(out, "w", encoding="utf-8") as handle:
            json.dump({"losses": losses, "resumed_last": resumed}, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
