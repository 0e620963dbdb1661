"""Gradient conflict (paper supp. Fig. A): how well each step's vision gradient agrees with the
dominant gradient direction of the run.

For every optimizer step the gradient of all trainable vision parameters (after accumulation,
cross-process reduction and clipping: what the optimizer receives) is flattened into one vector
``g_t``. The dominant direction ``u`` is the first principal component of the stacked gradients
``G = [g_1; ...; g_T]`` **(ours)**: by default without centring (the top right-singular vector of
``G``, the direction carrying most gradient energy, which is what "dominant gradient direction"
means: centring would remove exactly the direction the steps share), optionally centred
(``center=True``, scikit-learn's ``PCA``). ``u`` is sign-aligned with the mean gradient, and the
statistic is ``cos(g_t, u)`` per step, summarised by its mean and standard deviation.

Memory: ``G`` is ``T x D`` floats, kept exactly for small models; for large ones a fixed, seeded
random projection maps every ``g_t`` to ``k`` dimensions (default 4096) chunk by chunk, storing
``T x k`` floats; it preserves inner products approximately (Johnson-Lindenstrauss), hence the
cosines (:class:`GradientSketch`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from covft.train.trainer import TrainerCallback

__all__ = [
    "PAPER_GRADIENT_COSINE",
    "DeferredGradientRecorder",
    "GradientFile",
    "GradientRecorder",
    "GradientSketch",
    "choose_projection",
    "cosine_to_direction",
    "cosine_to_dominant",
    "dominant_direction",
    "read_gradient_file",
    "vision_gradients",
]

PAPER_GRADIENT_COSINE: dict[str, dict[str, float]] = {
    "full": {"mean": 0.076, "std": 0.112},
    "covft": {"mean": 0.189, "std": 0.051},
}
"""Supp. Fig. A (LLaVA-1.5-7B, LLaVA-665K mix, 8xH100): for reference only, not comparable to a
small run on other data."""

PROJECTIONS = ("none", "gaussian", "countsketch")


def dominant_direction(grads: torch.Tensor | np.ndarray, center: bool = False) -> np.ndarray:
    """Unit first principal component of the rows of ``grads`` ``[T, D]``, sign-aligned with their mean.

    Uncentred (default): the top eigenvector of the Gram matrix ``G G^T`` (``T x T``, exact and
    cheap for few steps and many dimensions) mapped back through ``G^T``. Centred: scikit-learn
    ``PCA(n_components=1)``.
    """
    matrix = np.asarray(
        grads.detach().cpu().double() if isinstance(grads, torch.Tensor) else grads, dtype=np.float64
    )
    if matrix.ndim != 2 or matrix.shape[0] < 1:
        raise ValueError(f"grads must be [steps, dims] with at least one step, got shape {matrix.shape}")
    if center:
        from sklearn.decomposition import PCA

        if matrix.shape[0] < 2:
            raise ValueError("a centred principal component needs at least two steps")
        direction = PCA(n_components=1, svd_solver="full").fit(matrix).components_[0]
    else:
        gram = matrix @ matrix.T
        _, vectors = np.linalg.eigh(gram)
        direction = matrix.T @ vectors[:, -1]
    norm = np.linalg.norm(direction)
    if norm == 0:
        raise ValueError("all gradients are zero: there is no dominant direction")
    direction = direction / norm
    if float(direction @ matrix.mean(axis=0)) < 0:
        direction = -direction
    return direction


def cosine_to_direction(grads: torch.Tensor | np.ndarray, direction: torch.Tensor | np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``grads`` ``[T, D]`` with ``direction`` ``[D]`` (0 for zero rows)."""
    matrix = np.asarray(
        grads.detach().cpu().double() if isinstance(grads, torch.Tensor) else grads, dtype=np.float64
    )
    vector = np.asarray(
        direction.detach().cpu().double() if isinstance(direction, torch.Tensor) else direction,
        dtype=np.float64,
    )
    if matrix.ndim == 1:
        matrix = matrix[None]
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector)
    dots = matrix @ vector
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def cosine_to_dominant(
    grads: torch.Tensor | np.ndarray, center: bool = False
) -> tuple[np.ndarray, float, float]:
    """``(cosines per step, mean, standard deviation)`` against :func:`dominant_direction`.

    The standard deviation is the population one (``ddof=0``) over steps.
    """
    cosines = cosine_to_direction(grads, dominant_direction(grads, center=center))
    return cosines, float(cosines.mean()), float(cosines.std())


class GradientSketch:
    """A fixed, seeded random projection ``R^D -> R^k`` applied chunk-wise to a list of tensors.

    The input vector is the concatenation of the tensors (parameter gradients, in a fixed order).
    Chunk ``j`` of tensor ``p`` (``chunk`` elements) is projected with its own random matrix drawn
    from a generator seeded by ``(seed, p, j)``, regenerated on every call instead of stored, so
    every step uses the same projection and memory stays ``O(k * chunk)``.

    - ``"gaussian"``: entries ``N(0, 1/k)``; inner products are preserved in expectation with
      relative error ``~1/sqrt(k)``. Costs ``D * k`` multiply-adds (and random draws) per call:
      fine on a GPU for towers of a few hundred million parameters, slow on a CPU.
    - ``"countsketch"``: every coordinate is added, with a random sign, to one random bucket
      (``O(D)`` per call); also unbiased for inner products, a little noisier. With
      ``cache_maps=True`` the buckets and signs (the same ones) are drawn once and kept, 8 bytes
      per coordinate: drawing them costs far more than adding, so on small models that a
      training run sketches every step this is many times faster.
    """

    def __init__(
        self,
        dim: int = 4096,
        seed: int = 0,
        kind: str = "gaussian",
        chunk: int = 4096,
        cache_maps: bool = False,
    ) -> None:
        if kind not in ("gaussian", "countsketch"):
            raise ValueError(f"kind must be 'gaussian' or 'countsketch', got {kind!r}")
        if dim < 1 or chunk < 1:
            raise ValueError(f"dim and chunk must be >= 1, got {dim} and {chunk}")
        if cache_maps and kind != "countsketch":
            raise ValueError("cache_maps applies to the countsketch only (a Gaussian map is dim x D floats)")
        self.dim = dim
        self.seed = seed
        self.kind = kind
        self.chunk = chunk
        self.cache_maps = cache_maps
        self._maps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _generator(self, device: torch.device, tensor_index: int, chunk_index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, tensor_index, chunk_index]).generate_state(1, np.uint64)[0]
        generator = torch.Generator(device=device)
        generator.manual_seed(int(state) & ((1 << 63) - 1))
        return generator

    def _count_map(self, p: int, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Buckets and signs of every coordinate of tensor ``p``, chunk by chunk as :meth:`__call__` draws them."""
        buckets, signs = [], []
        for j, start in enumerate(range(0, flat.numel(), self.chunk)):
            size = min(self.chunk, flat.numel() - start)
            generator = self._generator(flat.device, p, j)
            buckets.append(torch.randint(0, self.dim, (size,), generator=generator, device=flat.device))
            signs.append(torch.randint(0, 2, (size,), generator=generator, device=flat.device) * 2 - 1)
        return torch.cat(buckets), torch.cat(signs).float()

    def __call__(self, tensors: Iterable[torch.Tensor]) -> torch.Tensor:
        """The projection of the concatenated, flattened ``tensors``: a float32 CPU vector of ``dim``."""
        out: torch.Tensor | None = None
        for p, tensor in enumerate(tensors):
            flat = tensor.detach().reshape(-1).float()
            if out is None:
                out = torch.zeros(self.dim, device=flat.device)
            if self.cache_maps:
                if p not in self._maps or self._maps[p][0].numel() != flat.numel():
                    self._maps[p] = self._count_map(p, flat)
                buckets, signs = self._maps[p]
                out.index_add_(0, buckets, flat * signs)
                continue
            for j, start in enumerate(range(0, flat.numel(), self.chunk)):
                piece = flat[start : start + self.chunk]
                generator = self._generator(flat.device, p, j)
                if self.kind == "gaussian":
                    matrix = (
                        torch.randn(self.dim, piece.numel(), generator=generator, device=flat.device)
                        / self.dim**0.5
                    )
                    out += matrix @ piece
                else:
                    buckets = torch.randint(
                        0, self.dim, (piece.numel(),), generator=generator, device=flat.device
                    )
                    signs = (
                        torch.randint(0, 2, (piece.numel(),), generator=generator, device=flat.device) * 2 - 1
                    )
                    out.index_add_(0, buckets, piece * signs)
        if out is None:
            raise ValueError("nothing to project: no tensors given")
        return out.cpu()


def vision_gradients(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(name, grad)`` of every trainable vision parameter in a fixed order; zeros where no grad."""
    pairs = []
    for name, param in model.named_parameters():
        if param.requires_grad and model.part_of(name) == "vision":
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            pairs.append((name, grad))
    if not pairs:
        raise ValueError("the model has no trainable vision parameters (strategy 'freeze'?)")
    return pairs


def has_vision_gradient(model: nn.Module) -> bool:
    """Whether a vision parameter got a gradient (none after a text-only batch: no direction)."""
    return any(p.grad is not None for n, p in model.named_parameters() if model.part_of(n) == "vision")


class GradientRecorder(TrainerCallback):
    """Training callback: stores each step's flattened (or sketched) vision gradient.

    ``projection`` is ``"none"`` (exact: ``T x D`` floats on the CPU), ``"gaussian"`` or
    ``"countsketch"`` (``T x dim`` floats, see :class:`GradientSketch`). Gradients of parameters
    sharded by ZeRO-3/FSDP are not visible here: the analysis runs on one process. Text-only steps
    (no vision gradient) are not recorded, as in :class:`GradientFile`."""

    def __init__(self, projection: str = "none", dim: int = 4096, seed: int = 0) -> None:
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        self.projection = projection
        self.sketch = GradientSketch(dim, seed, projection) if projection != "none" else None
        self.rows: list[torch.Tensor] = []
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.num_parameters = 0

    def before_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        if not has_vision_gradient(model):  # a text-only step: no direction (not a cosine of 0)
            return
        grads = [g for _, g in vision_gradients(model)]
        self.num_parameters = sum(g.numel() for g in grads)
        if self.sketch is None:
            self.rows.append(torch.cat([g.detach().float().reshape(-1).cpu() for g in grads]))
        else:
            self.rows.append(self.sketch(grads))
        self.steps.append(step)
        self.losses.append(float(loss))

    def matrix(self) -> torch.Tensor:
        """The stacked ``[T, D or dim]`` gradients recorded so far."""
        if not self.rows:
            raise ValueError("no gradients were recorded (did training run any step with an image?)")
        return torch.stack(self.rows)


class GradientFile(TrainerCallback):
    """Training callback: appends every step's count-sketched vision gradient to a file.

    Each row is ``[step, sketch...]`` in float32, appended as the step happens, so a run that is
    interrupted and resumed re-records the steps after its checkpoint (:func:`read_gradient_file`
    keeps the last row of each step; an exactly resumed run records the same values again).
    Steps without any vision gradient (a text-only batch) are not recorded. The sketch's maps
    are cached (:class:`GradientSketch` ``cache_maps``), about 30 ms per step for 7M parameters
    on one CPU core.
    """

    def __init__(self, path: Any, dim: int = 4096, seed: int = 0) -> None:
        from pathlib import Path

        self.path = Path(path)
        self.sketch = GradientSketch(dim, seed, "countsketch", cache_maps=True)

    def before_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        if not has_vision_gradient(model):
            return
        row = torch.cat([torch.tensor([float(step)]), self.sketch([g for _, g in vision_gradients(model)])])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            row.numpy().astype(np.float32).tofile(handle)


def read_gradient_file(path: Any, dim: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, sketches [T, dim])`` of a :class:`GradientFile`, one row per step (the last one
    written), in step order."""
    data = np.fromfile(str(path), dtype=np.float32)
    if data.size % (dim + 1):
        raise ValueError(f"{path}: {data.size} values are not rows of {dim + 1} (step + a {dim}-d sketch)")
    rows = data.reshape(-1, dim + 1)
    last = {int(step): i for i, step in enumerate(rows[:, 0])}
    order = sorted(last)
    return np.asarray(order), rows[[last[s] for s in order], 1:]


def choose_projection(requested: str, num_parameters: int, steps: int, max_exact_mb: float) -> str:
    """``"auto"``: exact when ``steps x params`` float32 fit in ``max_exact_mb``, else count-sketch."""
    if requested != "auto":
        return requested
    return "none" if steps * num_parameters * 4 <= max_exact_mb * 2**20 else "countsketch"


class DeferredGradientRecorder(TrainerCallback):
    """A :class:`GradientRecorder` built at the first step, when the gradient size is known
    (``projection="auto"`` then picks exact or count-sketch, :func:`choose_projection`)."""

    def __init__(self, projection: str, dim: int, seed: int, steps: int, max_exact_mb: float) -> None:
        self.requested = projection
        self.dim = dim
        self.seed = seed
        self.steps = steps
        self.max_exact_mb = max_exact_mb
        self.recorder: GradientRecorder | None = None

    def before_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        if self.recorder is None:
            from covft.analysis.runs import require_single_process

            require_single_process("gradients")
            count = sum(g.numel() for _, g in vision_gradients(model))
            chosen = choose_projection(self.requested, count, self.steps, self.max_exact_mb)
            self.recorder = GradientRecorder(chosen, self.dim, self.seed)
        self.recorder.before_optimizer_step(step, model, loss)
