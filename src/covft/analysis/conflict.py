"""Visual preference conflict (paper Fig. 1b/c): two runs, same images, different task queries.

Two models are trained from the same start, with the same seed and schedule, on the same images
in the same order; only the text differs (default: grounding vs captioning). Every few steps the
two vision encoders are compared block by block:

- **parameter distance** ``||theta_A^(i) - theta_B^(i)||_2`` over *all* parameters of block ``i``
  (frozen ones are equal in both runs and add nothing). For CoVFT's CoMoE blocks that includes
  every expert, the router and the CVE, so the figure measures how far the whole block moved
  apart, whatever its parametrisation. Because CoMoE blocks hold E copies of the MLP, the
  absolute value is not comparable across strategies; ``param_relative`` divides it by the norm
  of the block at the start (the same for both runs).
- **feature distance** on a fixed probe set: both encoders see identical inputs (the probe images
  with run A's query), and block ``i``'s outputs are compared as the root-mean-square over tokens
  of the per-token L2 distance, averaged over probe images:
  ``mean_images ||H_A^(i) - H_B^(i)||_F / sqrt(N_tokens)``. This is a function of what the block
  computes, not of how it is parametrised, so it is the number to compare across strategies.

Run A writes a snapshot (block parameters and probe features) at every measured step; run B
reads the snapshot of the same step, records the distances and deletes it, so memory holds one
snapshot at a time (disk holds run A's, about one vision tower per measured step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from covft.analysis.runs import (
    block_list,
    human_text,
    preserve_forward_state,
    require_single_process,
    task_of,
    vision_forward,
)
from covft.data.templates import IMAGE_PLACEHOLDER
from covft.train.trainer import TrainerCallback

SNAPSHOTS_FOLDER = "conflict_snapshots"
"""Sub-folder of the output folder where run A's snapshots wait for run B."""

__all__ = [
    "SNAPSHOTS_FOLDER",
    "ConflictRecorder",
    "block_distances",
    "block_vectors",
    "feature_distances",
    "measure_steps",
    "outside_block_vector",
    "split_by_task",
    "vector_distances",
]


# ---------------------------------------------------------------------------------------------- data
def _task_turns(record: dict[str, Any], task: str) -> dict[str, Any] | None:
    """The record reduced to its turns of ``task`` (``<image>`` on the first), or ``None``."""
    turns = record.get("conversations", [])
    kept: list[dict[str, str]] = []
    for k in range(0, len(turns) - 1, 2):
        human, answer = turns[k], turns[k + 1]
        if human.get("from") == "human" and task_of(human.get("value", "")) == task:
            question = human_text(human["value"])
            kept += [{"from": "human", "value": question}, {"from": "gpt", "value": answer.get("value", "")}]
    if not kept:
        return None
    kept[0]["value"] = f"{IMAGE_PLACEHOLDER}\n{kept[0]['value']}" if kept[0]["value"] else IMAGE_PLACEHOLDER
    return {"id": f"{record.get('id')}:{task}", "image": record["image"], "conversations": kept}


def split_by_task(
    records: Sequence[dict[str, Any]],
    task_a: str = "grounding",
    task_b: str = "caption",
    captions: Sequence[dict[str, Any]] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two aligned lists of samples on the same images: item ``i`` of both shows the same image.

    Each record is reduced to its turns of one task family (:func:`covft.analysis.runs.task_of`),
    so multi-turn LLaVA-665K conversations that mix grounding and region captioning on one
    image give one sample per task. ``captions`` (e.g. the conflict world's ``captions.json``,
    one caption per training image) add samples for images whose own conversation has no
    turn of a task. Only images that have both tasks are kept, in order of first appearance.
    """
    pools: dict[str, dict[str, dict[str, Any]]] = {task_a: {}, task_b: {}}
    order: list[str] = []
    for record in [*records, *captions]:
        image = record.get("image")
        if not isinstance(image, str):
            continue
        for task, pool in pools.items():
            if image not in pool:
                reduced = _task_turns(record, task)
                if reduced is not None:
                    pool[image] = reduced
                    if image not in order:
                        order.append(image)
    shared = [image for image in order if image in pools[task_a] and image in pools[task_b]]
    if not shared:
        raise ValueError(
            f"no image has both a {task_a!r} and a {task_b!r} sample ({len(pools[task_a])} and "
            f"{len(pools[task_b])} images). Fix: pass a captions file for these images (the world's "
            "captions.json), or give the two runs' data explicitly with --data-a/--data-b"
        )
    return [pools[task_a][i] for i in shared], [pools[task_b][i] for i in shared]


# -------------------------------------------------------------------------------------- distances
def block_vectors(model: nn.Module) -> list[torch.Tensor]:
    """Every vision block's parameters flattened into one float32 CPU vector, in depth order."""
    return [
        torch.cat([p.detach().float().reshape(-1).cpu() for p in block.parameters()])
        for block in block_list(model)
    ]


def outside_block_vector(model: nn.Module) -> torch.Tensor:
    """The vision tower's parameters outside the blocks (embeddings, pre/post norms), flattened.

    Full fine-tuning trains them too; they shift every block's input, so the feature distance of
    block 0 can be large although its own parameters barely moved.
    """
    inside = {id(p) for block in block_list(model) for p in block.parameters()}
    outside = [p for p in model.vision_tower.parameters() if id(p) not in inside]
    if not outside:
        return torch.zeros(0)
    return torch.cat([p.detach().float().reshape(-1).cpu() for p in outside])


def vector_distances(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> list[float]:
    """L2 distance between corresponding vectors of two equally long lists."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} blocks vs {len(b)}: compare models of the same structure")
    distances = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.shape != y.shape:
            raise ValueError(f"block {i}: {tuple(x.shape)} vs {tuple(y.shape)} parameters")
        distances.append(float(torch.linalg.vector_norm(x.double() - y.double())))
    return distances


def block_distances(model_a: nn.Module, model_b: nn.Module) -> list[float]:
    """Per-block L2 distance between two vision encoders over all parameters of each block.

    Accepts ``CovftModel``s, LLaVA models, vision towers or block lists of the same structure.
    """
    names_a = [[n for n, _ in block.named_parameters()] for block in block_list(model_a)]
    names_b = [[n for n, _ in block.named_parameters()] for block in block_list(model_b)]
    if names_a != names_b:
        raise ValueError("the two encoders have different block structures (apply the same strategy)")
    return vector_distances(block_vectors(model_a), block_vectors(model_b))


def feature_distances(features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor]) -> list[float]:
    """Per block, ``mean_images ||H_A - H_B||_F / sqrt(N_tokens)`` for ``[B, N, d]`` block outputs."""
    if len(features_a) != len(features_b):
        raise ValueError(f"{len(features_a)} blocks vs {len(features_b)}")
    distances = []
    for x, y in zip(features_a, features_b, strict=True):
        if x.shape != y.shape or x.dim() != 3:
            raise ValueError(
                f"features must be equal [B, N, d] tensors, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        per_image = torch.linalg.vector_norm((x.double() - y.double()).flatten(1), dim=1) / math.sqrt(
            x.shape[1]
        )
        distances.append(float(per_image.mean()))
    return distances


def measure_steps(total: int, every: int) -> list[int]:
    """Steps at which the encoders are compared: 0 (the shared start), every ``every``, and the last."""
    if total < 1 or every < 1:
        raise ValueError(f"steps and every must be >= 1, got {total} and {every}")
    return sorted({0, *range(every, total + 1, every), total})


# --------------------------------------------------------------------------------------- recording
class ConflictRecorder(TrainerCallback):
    """Training callback: snapshots (run A, ``role="reference"``) or compares (run B, ``"compare"``).

    Measurements happen before the first update (step 0) and after the update of every step in
    ``steps``. The probe forward runs in eval mode without gradients and leaves the routing
    state of the training batch untouched.
    """

    def __init__(
        self,
        snapshot_dir: str | Path,
        probe: Sequence[dict[str, Any]],
        steps: Sequence[int],
        role: str,
        keep_snapshots: bool = False,
    ) -> None:
        if role not in ("reference", "compare"):
            raise ValueError(f"role must be 'reference' or 'compare', got {role!r}")
        self.snapshot_dir = Path(snapshot_dir)
        self.probe = list(probe)
        self.steps = set(steps)
        self.role = role
        self.keep_snapshots = keep_snapshots
        self.records: list[dict[str, Any]] = []
        self._batch: dict[str, torch.Tensor] | None = None
        self._initial_norms: list[float] | None = None
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)

    def before_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        if step == 1:
            require_single_process("conflict")
        if step == 1 and 0 in self.steps:
            self.measure(0, model)

    def after_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        if step in self.steps:
            self.measure(step, model)

    def _features(self, model: nn.Module) -> list[torch.Tensor]:
        if self._batch is None:
            self._batch = model.collate(self.probe)
        with preserve_forward_state(model):
            return [h.detach().float().cpu().contiguous() for h in vision_forward(model, self._batch)]

    def measure(self, step: int, model: nn.Module) -> None:
        """Snapshot (reference) or compare against the reference snapshot of the same step."""
        params = block_vectors(model)
        outside = outside_block_vector(model)
        features = self._features(model)
        path = self.snapshot_dir / f"step_{step:06d}.safetensors"
        if self._initial_norms is None:
            self._initial_norms = [float(torch.linalg.vector_norm(v.double())) for v in params]
        if self.role == "reference":
            tensors = {f"param.{i}": v for i, v in enumerate(params)}
            tensors["outside"] = outside
            tensors.update({f"feature.{i}": f for i, f in enumerate(features)})
            save_file(tensors, str(path))
            return
        if not path.is_file():
            raise FileNotFoundError(f"{path}: run A wrote no snapshot for step {step}")
        reference = load_file(str(path))
        ref_params = [reference[f"param.{i}"] for i in range(len(params))]
        ref_features = [reference[f"feature.{i}"] for i in range(len(features))]
        l2 = vector_distances(ref_params, params)
        self.records.append(
            {
                "step": step,
                "param_l2": l2,
                "param_relative": [
                    d / n if n > 0 else 0.0 for d, n in zip(l2, self._initial_norms, strict=True)
                ],
                "feature_l2": feature_distances(ref_features, features),
                "outside_l2": vector_distances([reference["outside"]], [outside])[0],
            }
        )
        if not self.keep_snapshots:
            path.unlink()
