"""Per-sample routing's cost: one CoMoE block on the same tokens, routed three ways.

Side by side in one run, on the same weights and the same tokens, forward+backward time (median
over repeats after warm-up) of ``covft.nn.ContextualMoE`` (CVE context, dense routing, 4 experts):

- ``batched``: ``[B, N, d]``, one image per sample, no owner (LLaVA-1.5; the reference);
- ``tiles``: the same ``B * N`` tokens as ``[2B, N/2, d]`` rows, two rows per sample
  (``ContextState.owner``; anyres tiles, several images per sample);
- ``packed``: the same tokens as packed ``[B * N, d]`` with a per-token owner (Qwen-VL towers).

Every way computes one gate vector per sample from the sample's tokens, so the outputs agree (the
script checks it) and the ratio to ``batched`` is the owner path's overhead: the segment softmax of
the CVE, the gather of per-row gates, the owner checks.

    python benchmarks/bench_owner.py                 # CLIP ViT-L block geometry, CPU fp32, 2 samples
    python benchmarks/bench_owner.py --mlp swiglu    # Qwen2.5-VL's gated vision MLP
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from covft.nn import ContextState, ContextualMoE

GEOMETRIES = {
    "clip": {"tokens": 576, "dim": 1024, "hidden": 4096},
    "swiglu": {"tokens": 576, "dim": 1280, "hidden": 3420},
}


class _Mlp(nn.Module):
    def __init__(self, kind: str, dim: int, hidden: int) -> None:
        super().__init__()
        if kind == "clip":
            self.fc1, self.fc2, self.activation_fn = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.GELU()
        else:
            self.gate_proj, self.up_proj = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
            self.down_proj, self.act_fn = nn.Linear(hidden, dim), nn.SiLU()


def _time(runs: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per way; the ways alternate within each repeat so machine load hits all alike."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(argv: list[str] | None = None) -> dict:
    """Time the three ways; returns the geometry, seconds per way and each way's max difference to batched."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mlp", choices=sorted(GEOMETRIES), default="clip")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--text-dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tokens", type=int, help="tokens per sample (even; default: the --mlp geometry)")
    parser.add_argument("--dim", type=int, help="hidden size (default: the --mlp geometry)")
    parser.add_argument("--hidden", type=int, help="MLP width (default: the --mlp geometry)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    geometry = dict(GEOMETRIES[args.mlp])
    geometry.update({k: getattr(args, k) for k in ("tokens", "dim", "hidden") if getattr(args, k)})
    samples, tokens, dim = args.samples, geometry["tokens"], geometry["dim"]
    torch.manual_seed(0)
    state = ContextState()
    moe = ContextualMoE.from_mlp(_Mlp(args.mlp, dim, geometry["hidden"]), state, args.text_dim, num_experts=4)
    with torch.no_grad():  # experts apart, so routing matters to the output
        for p in moe.experts.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.randn(samples, tokens, dim)
    text = torch.randn(samples, args.text_dim)
    arange = torch.arange(samples)
    ways = {
        "batched": (x, None),
        "tiles": (x.reshape(2 * samples, tokens // 2, dim), arange.repeat_interleave(2)),
        "packed": (x.reshape(samples * tokens, dim), arange.repeat_interleave(tokens)),
    }
    runs = {}
    for name, (tokens_in, owner) in ways.items():

        def run(tokens_in=tokens_in, owner=owner):
            state.text, state.owner = text, owner
            moe.zero_grad(set_to_none=True)
            out = moe(tokens_in.clone().requires_grad_(True))
            out.sum().backward()
            return out.detach().reshape(samples, tokens, dim)

        runs[name] = run
    outputs = {name: run() for name, run in runs.items()}
    diffs = {name: (outputs[name] - outputs["batched"]).abs().max().item() for name in runs}
    seconds = _time(runs, args.repeats, args.warmup)
    return {"args": args, "geometry": geometry, "seconds": seconds, "max_diff": diffs}


def main(argv: list[str] | None = None) -> None:
    result = measure(argv)
    args, geometry, seconds = result["args"], result["geometry"], result["seconds"]
    worst = max(result["max_diff"].values())
    if worst > 1e-4:
        raise SystemExit(f"the owner paths disagree with batched routing: max |difference| {worst:.2e}")
    print(
        f"CoMoE ({args.mlp}, d={geometry['dim']}, {args.samples} samples x {geometry['tokens']} tokens, E=4, "
        f"CVE), forward+backward, median of {args.repeats} on {torch.get_num_threads()} thread(s); "
        f"outputs agree (max |difference| {worst:.1e})"
    )
    for name, value in seconds.items():
        print(f"  {name:8s} {value * 1000:8.1f} ms   x{value / seconds['batched']:.2f} of batched")


if __name__ == "__main__":
    main()
