"""1-D interpolation and 2-D plane landscapes: wsdlab vs the `loss-landscapes` package, one process.

    python benchmarks/bench_landscape.py [--device cuda] [--steps 40] [--grid 12] ...

Same model, same batch, same grid points: loss_landscapes.linear_interpolation (steps points
theta0 + i/steps (theta1 - theta0), i = 1..steps) and planar_interpolation (steps x steps points
of its zig-zag walk) against wsdlab's `combination_losses`, which evaluates `--chunk-size` points
per vmapped forward. Agreement is the largest absolute loss difference over the grid (the peer
walks by in-place additions, so it accumulates round-off; wsdlab forms each point directly).

The peer is the `loss-landscapes` package (`pip install loss-landscapes`, the `bench` extra); when
it does not import, `peer_line` / `peer_plane` below re-implement its walk (one in-place parameter
update and one forward per point) and the output says so.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import format_times, timed

from wsdlab.analysis.landscape import combination_losses
from wsdlab.analysis.weights import model_weights
from wsdlab.models import batch_loss, build_model, model_config, num_parameters


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


@torch.no_grad()
def peer_line(start: nn.Module, end: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int) -> np.ndarray:
    """loss_landscapes.linear_interpolation's walk, re-implemented."""
    model = copy.deepcopy(start)
    params = list(model.parameters())
    direction = [(e - s) / steps for s, e in zip(params, end.parameters())]
    out = []
    for _ in range(steps):
        for p, d in zip(params, direction):
            p.add_(d)
        out.append(lm_loss(model(inputs), targets).item())
    return np.array(out)


@torch.no_grad()
def peer_plane(start: nn.Module, end1: nn.Module, end2: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
               steps: int) -> np.ndarray:
    """loss_landscapes.planar_interpolation's zig-zag walk, re-implemented."""
    model = copy.deepcopy(start)
    params = list(model.parameters())
    d1 = [(e - s) / steps for s, e in zip(params, end1.parameters())]
    d2 = [(e - s) / steps for s, e in zip(params, end2.parameters())]
    matrix = []
    for i in range(steps):
        column: list[float] = []
        for _ in range(steps):
            if i % 2 == 0:
                for p, d in zip(params, d2):
                    p.add_(d)
                column.append(lm_loss(model(inputs), targets).item())
            else:
                for p, d in zip(params, d2):
                    p.sub_(d)
                column.insert(0, lm_loss(model(inputs), targets).item())
        matrix.append(column)
        for p, d in zip(params, d1):
            p.add_(d)
    return np.array(matrix)


def peer_functions() -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray], str]:
    try:
        import loss_landscapes  # type: ignore[import-not-found]
        from loss_landscapes.metrics import Loss  # type: ignore[import-not-found]
    except ImportError:
        return peer_line, peer_plane, "peer_line/peer_plane (re-implementation; loss-landscapes not installed)"

    def line(start: nn.Module, end: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int) -> np.ndarray:
        return loss_landscapes.linear_interpolation(start, end, Loss(lm_loss, inputs, targets), steps=steps,
                                                    deepcopy_model=True)

    def plane(start: nn.Module, e1: nn.Module, e2: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
              steps: int) -> np.ndarray:
        return loss_landscapes.planar_interpolation(start, e1, e2, Loss(lm_loss, inputs, targets), steps=steps,
                                                    deepcopy_model=True)

    return line, plane, "loss-landscapes"


def plane_coefficients(steps: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(points, 3) coefficients of (start, end1, end2) for the peer's grid, and each point's (i, j) cell.

    Column i sits at a = i/steps; even columns at b = (j+1)/steps, odd ones at b = j/steps
    (the peer's zig-zag walk adds before evaluating going up and subtracts before going down).
    """
    rows, cells = [], []
    for i in range(steps):
        for j in range(steps):
            a, b = i / steps, (j + 1 if i % 2 == 0 else j) / steps
            rows.append([1 - a - b, a, b])  # start + a (end1 - start) + b (end2 - start)
            cells.append((i, j))
    return torch.tensor(rows, dtype=torch.float64), cells


def perturbed(model: nn.Module, scale: float, seed: int) -> nn.Module:
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.device) * p.detach().std().clamp_min(1e-3))
    return other


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40, help="Points on the line.")
    ap.add_argument("--grid", type=int, default=12, help="Plane is grid x grid points.")
    ap.add_argument("--chunk-size", type=int, default=16, help="Points per vmapped forward (ours).")
    ap.add_argument("--repeats", type=int, default=5, help="Best of this many timings (shared CPUs are noisy).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for both sides (1: stable timings on a shared machine; OpenMP spin-waits "
                         "make oversubscribed multi-thread timings erratic).")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    torch.manual_seed(args.seed)
    cfg = model_config("tiny", vocab_size=args.vocab, n_layers=args.layers, d_model=args.d_model,
                       n_heads=4, n_kv_heads=2, seq_len=max(args.seq_len, 16), ffn_dim=3 * args.d_model)
    start = build_model(cfg).to(args.device).eval()
    end1, end2 = perturbed(start, 0.5, 1), perturbed(start, 0.5, 2)
    g = torch.Generator().manual_seed(args.seed + 1)
    batch = torch.randint(0, args.vocab, (args.batch_size, args.seq_len + 1), generator=g).to(args.device)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    w0, w1, w2 = model_weights(start), model_weights(end1), model_weights(end2)
    line, plane, peer_name = peer_functions()
    print(f"model: {num_parameters(start):,} parameters | batch {args.batch_size} x {args.seq_len} | device "
          f"{args.device} | threads {torch.get_num_threads()} | peer: {peer_name}")

    # ---- 1-D line: the peer's points are theta0 + i/steps (theta1 - theta0), i = 1..steps
    alphas = torch.arange(1, args.steps + 1, dtype=torch.float64) / args.steps
    coeffs = torch.stack([1 - alphas, alphas], dim=1)
    work = copy.deepcopy(start)
    t_peer, peer_vals, c_peer = timed(lambda: line(start, end1, inputs, targets, args.steps), args.repeats, args.device)
    t_ours, ours, c_ours = timed(lambda: combination_losses(work, batch_loss, [batch], [w0, w1], coeffs,
                                                    chunk_size=args.chunk_size), args.repeats, args.device)
    diff = float(np.abs(np.asarray(peer_vals) - ours.numpy()).max())
    print(f"line  ({args.steps} points)      {format_times(t_peer, t_ours, c_peer, c_ours, '6.3f')}  | max |loss diff| {diff:.1e}")

    # ---- 2-D plane
    pc, cells = plane_coefficients(args.grid)
    t_peer, peer_grid, c_peer = timed(lambda: plane(start, end1, end2, inputs, targets, args.grid), args.repeats, args.device)
    t_ours, ours, c_ours = timed(lambda: combination_losses(work, batch_loss, [batch], [w0, w1, w2], pc,
                                                    chunk_size=args.chunk_size), args.repeats, args.device)
    grid = np.asarray(peer_grid)
    diff = max(abs(float(grid[i, j]) - float(v)) for (i, j), v in zip(cells, ours))
    print(f"plane ({args.grid}x{args.grid} points)  {format_times(t_peer, t_ours, c_peer, c_ours, '6.3f')}  | max |loss diff| {diff:.1e}")


if __name__ == "__main__":
    main()
