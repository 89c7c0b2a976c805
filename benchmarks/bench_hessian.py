"""Hessian trace and top eigenvalues: wsdlab vs PyHessian, same model, same data, one process.

    python benchmarks/bench_hessian.py [--device cuda] [--samples 32] [--batches 2] ...

Both sides estimate the trace with Hutchinson's estimator on the same number of Rademacher probes
(the same estimator, so equal accuracy up to sampling; agreement is shown in standard errors) and
the top eigenvalue(s) (PyHessian: power iteration with deflation at its defaults, maxIter 100,
tol 1e-3; wsdlab: Lanczos with full reorthogonalisation). Eigenvalue accuracy is the relative error
against a tightly converged Lanczos reference (not timed). Times are the best of --repeats runs and
include building each side's gradient graph.

The peer is the `pyhessian` package (`pip install pyhessian`, the `bench` extra). When it does not
import, `PeerHessian` below re-implements its algorithm (its per-probe loop, its
per-batch HVP in data-loader mode, its power iteration) and the output says so.
The model is a Llama of the `tiny` family with a small vocabulary, briefly trained (--train-steps
AdamW steps) on a synthetic next-token pattern so its Hessian has the positive outliers of a
trained network; timing does not depend on training.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import format_times, timed

from wsdlab.analysis.evalset import math_attention
from wsdlab.analysis.hessian import HessianOperator, hutchinson_trace, hutchpp_trace, lanczos_eigenvalues
from wsdlab.models import batch_loss, build_model, model_config, num_parameters


def lm_criterion(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


class PeerHessian:
    """PyHessian's algorithms (hessian.py, v0.1), re-implemented: used only when pyhessian is missing."""

    def __init__(self, model: nn.Module, criterion: Callable, data: Any = None, dataloader: Any = None,
                 cuda: bool = False) -> None:
        self.model, self.criterion = model.eval(), criterion
        self.full_dataset = dataloader is not None
        self.data = dataloader if self.full_dataset else data
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.full_dataset:
            inputs, targets = data
            loss = criterion(model(inputs), targets)
            self.grads = torch.autograd.grad(loss, self.params, create_graph=True)

    def _hv(self, v: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.full_dataset:
            return list(torch.autograd.grad(self.grads, self.params, grad_outputs=v, retain_graph=True))
        total = [torch.zeros_like(p) for p in self.params]
        count = 0
        for inputs, targets in self.data:  # PyHessian's dataloader_hv_product: a new graph per batch per product
            loss = self.criterion(self.model(inputs), targets)
            grads = torch.autograd.grad(loss, self.params, create_graph=True)
            hv = torch.autograd.grad(grads, self.params, grad_outputs=v)
            total = [t + h * inputs.size(0) for t, h in zip(total, hv)]
            count += inputs.size(0)
        return [t / count for t in total]

    def trace(self, maxIter: int = 100, tol: float = 1e-3) -> list[float]:
        values: list[float] = []
        trace = 0.0
        for _ in range(maxIter):
            v = [torch.randint_like(p, high=2) * 2 - 1 for p in self.params]
            values.append(float(sum((h * x).sum() for h, x in zip(self._hv(v), v))))
            if abs(np.mean(values) - trace) / (trace + 1e-6) < tol:
                return values
            trace = float(np.mean(values))
        return values

    def eigenvalues(self, maxIter: int = 100, tol: float = 1e-3, top_n: int = 1) -> tuple[list[float], list[Any]]:
        found: list[list[torch.Tensor]] = []
        values: list[float] = []
        for _ in range(top_n):
            v = _normalize([torch.randn_like(p) for p in self.params])
            value = None
            for _ in range(maxIter):
                for u in found:
                    dot = sum((a * b).sum() for a, b in zip(v, u))
                    v = [a - dot * b for a, b in zip(v, u)]
                v = _normalize(v)
                hv = self._hv(v)
                new = float(sum((a * b).sum() for a, b in zip(hv, v)))
                v = _normalize(hv)
                if value is not None and abs(value - new) / (abs(value) + 1e-6) < tol:
                    break
                value = new
            values.append(value if value is not None else math.nan)
            found.append(v)
        return values, found


def _normalize(v: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = math.sqrt(sum(float((x * x).sum()) for x in v))
    return [x / (norm + 1e-6) for x in v]


def pattern_batch(batch: int, seq_len: int, vocab: int, g: torch.Generator) -> torch.Tensor:
    """Token sequences where each token is the previous one plus 1..3 (mod vocab): learnable in a few steps."""
    start = torch.randint(0, vocab, (batch, 1), generator=g)
    return torch.cat([start, start + torch.randint(1, 4, (batch, seq_len), generator=g).cumsum(1)], 1) % vocab


def make_peer(model: nn.Module, batches: Sequence[torch.Tensor], device: str) -> tuple[Any, str]:
    """PyHessian on the same model/data (single-batch mode for one batch, data-loader mode otherwise).

    PyHessian's single-batch mode builds its gradient with `loss.backward(create_graph=True)`, which
    *adds* to `.grad`: the grads are cleared first, or a second instance would see 2 H.
    """
    model.zero_grad(set_to_none=True)
    pairs = [(b[:, :-1], b[:, 1:]) for b in batches]
    try:
        from pyhessian import hessian as peer_cls  # type: ignore[import-not-found]

        name = "pyhessian"
    except ImportError:
        peer_cls, name = PeerHessian, "PeerHessian (re-implementation; pyhessian not installed)"
    cuda = device == "cuda"
    if len(pairs) == 1:
        return peer_cls(model, lm_criterion, data=pairs[0], cuda=cuda), name
    return peer_cls(model, lm_criterion, dataloader=pairs, cuda=cuda), name


class ProductCounter:
    """Counts the peer's Hessian-vector products (wraps PyHessian's HVP entry points, or PeerHessian._hv)."""

    def __init__(self) -> None:
        self.count = 0

    def attach(self, peer: Any) -> Any:
        if isinstance(peer, PeerHessian):
            inner = peer._hv
            peer._hv = lambda v: (self._tick(), inner(v))[1]
            return peer
        import sys

        ph = sys.modules[type(peer).__module__]  # pyhessian.hessian (the package re-exports the class by that name)

        if peer.full_dataset:
            inner_dl = peer.dataloader_hv_product
            peer.dataloader_hv_product = lambda v: (self._tick(), inner_dl(v))[1]
        elif not getattr(ph, "_wsdlab_counted", False):
            inner_fn = ph.hessian_vector_product
            ph.hessian_vector_product = lambda g, p, v: (COUNTER._tick(), inner_fn(g, p, v))[1]
            ph._wsdlab_counted = True
        return peer

    def _tick(self) -> None:
        self.count += 1


COUNTER = ProductCounter()


def peer_name() -> str:
    try:
        import pyhessian  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "PeerHessian (re-implementation; pyhessian not installed)"
    return "pyhessian"


def _se(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def equal_accuracy_trace(model: nn.Module, batches: Sequence[torch.Tensor], args: argparse.Namespace) -> None:
    """Trace at equal accuracy: the time each method needs to reach the standard error PyHessian reaches.

    The target is the SE of PyHessian's `trace()` at --peer-max-iter / --peer-tol (its defaults,
    maxIter 100 and tol 1e-3, stop when the running mean changes by < 0.1% relatively, often after
    fewer than 10 probes; --peer-tol=-inf runs all maxIter probes, a steadier target). Ours: `hutchinson_trace` with
    `target_stderr` = that SE (stops as soon as its own SE is there), and Hutch++ at the smallest
    product count of a doubling grid whose SE (of its deflated part) is there (the grid search is
    not timed; only the final run is). Because discrete stopping lands below the target by
    different amounts, the cost-normalised ratio (SE^2 x time: the time to a given SE, which scales
    as 1/SE^2) is printed beside the raw time ratio.
    """
    def peer_default() -> list[float]:
        peer, _ = make_peer(model, batches, args.device)
        torch.manual_seed(args.seed)
        return peer.trace(maxIter=args.peer_max_iter, tol=args.peer_tol)

    t_peer, vals, c_peer = timed(peer_default, args.repeats, args.device)
    target = _se(vals)
    print(f"trace at equal accuracy: peer (maxIter {args.peer_max_iter}, tol {args.peer_tol:g}) stops after {len(vals)} "
          f"probes at {np.mean(vals):.4g} +- {target:.2g}; wall {t_peer:.2f}s cpu {c_peer:.2f}s")

    def ours_hutch() -> Any:
        op = HessianOperator(model, batch_loss, batches, probe_chunk=args.probe_chunk)
        return hutchinson_trace(op, 20 * max(len(vals), 10), seed=args.seed, target_stderr=target,
                                min_samples=min(10, len(vals)))

    products = 12
    probe = HessianOperator(model, batch_loss, batches, probe_chunk=args.probe_chunk)
    while hutchpp_trace(probe, products, seed=args.seed).stderr > target and products < 50 * max(len(vals), 10):
        products *= 2
    del probe

    def ours_plus() -> Any:
        op = HessianOperator(model, batch_loss, batches, probe_chunk=args.probe_chunk)
        return hutchpp_trace(op, products, seed=args.seed)

    for name, fn in (("Hutchinson, stop at peer's SE", ours_hutch), (f"Hutch++, {products} products", ours_plus)):
        t, est, c = timed(fn, args.repeats, args.device)
        norm_wall = (target ** 2 * t_peer) / (est.stderr ** 2 * t)
        norm_cpu = (target ** 2 * c_peer) / (est.stderr ** 2 * c)
        print(f"  {name}: {est.products} products, {est.trace:.4g} +- {est.stderr:.2g} | {format_times(t_peer, t, c_peer, c)}"
              f"\n    SE^2 x time (equal-accuracy) speed-up: wall x{norm_wall:.2f}, cpu x{norm_cpu:.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--samples", type=int, default=32, help="Hutchinson probes (both sides).")
    ap.add_argument("--top-k", type=int, default=1)
    ap.add_argument("--probe-chunk", type=int, default=None,
                    help="Products per batched backward (default: 1 on CPU, measured fastest at 1 thread; 16 on CUDA).")
    ap.add_argument("--peer-max-iter", type=int, default=100,
                    help="PyHessian trace maxIter for the equal-accuracy comparison (its default: 100).")
    ap.add_argument("--peer-tol", type=float, default=1e-3,
                    help="PyHessian trace tol (its default 1e-3 often stops after <10 probes, whose SE is itself "
                         "noisy; -inf runs all --peer-max-iter probes).")
    ap.add_argument("--repeats", type=int, default=3, help="Best of this many timings (shared CPUs are noisy).")
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--eigen-tol", type=float, default=1e-2, help="Lanczos residual tolerance (ours).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for both sides (1: stable timings on a shared machine; OpenMP spin-waits "
                         "make oversubscribed multi-thread timings erratic).")
    args = ap.parse_args(argv)
    if args.probe_chunk is None:
        args.probe_chunk = 1 if args.device == "cpu" else 16
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    torch.manual_seed(args.seed)
    cfg = model_config("tiny", vocab_size=args.vocab, n_layers=args.layers, d_model=args.d_model,
                       seq_len=max(args.seq_len, 16), ffn_dim=3 * args.d_model)
    model = build_model(cfg).to(args.device)
    g = torch.Generator().manual_seed(args.seed + 1)
    batches = [pattern_batch(args.batch_size, args.seq_len, args.vocab, g).to(args.device) for _ in range(args.batches)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(args.train_steps):
        loss = batch_loss(model, pattern_batch(16, args.seq_len, args.vocab, g).to(args.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    print(f"model: {num_parameters(model):,} parameters | {args.batches} batch(es) of {args.batch_size} x "
          f"{args.seq_len} tokens | device {args.device} | threads {torch.get_num_threads()}")

    with math_attention():
        # ---- trace
        def peer_trace() -> list[float]:
            peer, _ = make_peer(model, batches, args.device)
            torch.manual_seed(args.seed)
            return peer.trace(maxIter=args.samples, tol=-math.inf)  # never stops early: exactly `samples` probes

        def our_trace() -> Any:
            op = HessianOperator(model, batch_loss, batches, probe_chunk=args.probe_chunk)
            return hutchinson_trace(op, args.samples, seed=args.seed)

        t_peer, peer_vals, c_peer = timed(peer_trace, args.repeats, args.device)
        t_ours, ours, c_ours = timed(our_trace, args.repeats, args.device)
        peer_mean = float(np.mean(peer_vals))
        peer_se = float(np.std(peer_vals, ddof=1) / math.sqrt(len(peer_vals)))
        z = abs(peer_mean - ours.trace) / math.hypot(peer_se, ours.stderr)
        print(f"peer: {peer_name()}")
        print(f"trace ({args.samples} probes)  {format_times(t_peer, t_ours, c_peer, c_ours)}"
              f"\n  estimates: peer {peer_mean:.4g} +- {peer_se:.2g}, ours {ours.trace:.4g} +- {ours.stderr:.2g} ({z:.1f} SE apart)")
        op = HessianOperator(model, batch_loss, batches, probe_chunk=args.probe_chunk)
        plus = hutchpp_trace(op, args.samples, seed=args.seed)
        print(f"  Hutch++ ({args.samples} products): {plus.trace:.4g} +- {plus.stderr:.2g} (deflated part's SE)")
        equal_accuracy_trace(model, batches, args)

        # ---- top eigenvalues
        reference = lanczos_eigenvalues(op, args.top_k, max_iters=200, tol=1e-9, seed=args.seed + 7).eigenvalues

        def peer_eigen(tol: float = 1e-3, max_iter: int = 100) -> list[float]:
            peer, _ = make_peer(model, batches, args.device)
            COUNTER.attach(peer)
            COUNTER.count = 0
            torch.manual_seed(args.seed)
            return peer.eigenvalues(maxIter=max_iter, tol=tol, top_n=args.top_k)[0]

        def our_eigen() -> Any:
            o = HessianOperator(model, batch_loss, batches, probe_chunk=args.probe_chunk)
            return lanczos_eigenvalues(o, args.top_k, max_iters=100, tol=args.eigen_tol, seed=args.seed)

        t_peer, peer_eig, c_peer = timed(peer_eigen, args.repeats, args.device)
        t_ours, our_eig, c_ours = timed(our_eigen, args.repeats, args.device)
        peer_err = max(abs(a - b) / abs(b) for a, b in zip(sorted(peer_eig, reverse=True), reference))
        our_err = max(abs(a - b) / abs(b) for a, b in zip(our_eig.eigenvalues, reference))
        print(f"top-{args.top_k} eigen        {format_times(t_peer, t_ours, c_peer, c_ours)}"
              f"\n  rel. error peer {peer_err:.1e} ({', '.join(f'{x:.5g}' for x in peer_eig)}; {COUNTER.count} products),"
              f" ours {our_err:.1e}"
              f" ({our_eig.products} products)"
              f"  reference {', '.join(f'{x:.5g}' for x in reference)}")
        # equal accuracy: the peer's power iteration run to a tolerance that reaches our error (or 400 steps)
        t_tight, tight_eig, c_tight = timed(lambda: peer_eigen(tol=max(our_err, 1e-7) / 10, max_iter=400),
                                            args.repeats, args.device)
        tight_err = max(abs(a - b) / abs(b) for a, b in zip(sorted(tight_eig, reverse=True), reference))
        print(f"top-{args.top_k} eigen, peer at tol {max(our_err, 1e-7) / 10:.0e}  {format_times(t_tight, t_ours, c_tight, c_ours)}"
              f"\n  rel. error peer {tight_err:.1e} ({COUNTER.count} products), ours {our_err:.1e}")


if __name__ == "__main__":
    main()
