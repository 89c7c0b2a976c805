"""Hessian-vector products of the mean loss over a fixed evaluation set, and the sharpness measures built on them.

H v is computed reverse-over-reverse: the gradient g = dL/dtheta is built once with
`create_graph=True` (inside `math_attention()`: SDPA's math kernel, per thread, because the flash and memory-efficient
attention kernels have no double backward) and every product is `autograd.grad(g, theta, v,
retain_graph=True)`, so the first backward is paid once and reused by all products (PyHessian
rebuilds it per batch per product when there are several batches). Forward-over-reverse
(`torch.func.jvp` of `grad`) also works through the math kernel but was slower on CPU, so it is not
used. Several products are computed in one call with `is_grads_batched=True` (vmap over the second
backward; `probe_chunk` rows at a time), which helps where kernels are launch-bound (GPUs, small
models); on a compute-bound CPU at one thread it was 7-18% *slower* than one product at a time
(benchmarks/README.md; pass `probe_chunk=1` there), while tiny models (tests, `exact_hessian`)
gain from it, so the default stays 16. The loss is the batch-size-weighted mean over a
fixed list of batches, the model is put in eval mode (no dropout), and all random probes come from
a `torch.Generator` seeded by the caller (drawn on CPU), so every estimate is deterministic given
its seed.

Estimators (all work on an `HvpOperator`, a symmetric n x n matrix known only through products):
- `hutchinson_trace`: tr H ~ mean_j z_j^T H z_j with Rademacher z_j, with its standard error;
  optionally stops as soon as the standard error reaches a target (`target_stderr`, or
  `target_rel_stderr` relative to the estimate).
- `hutchpp_trace`: Hutch++ (Meyer et al. 2021): lower variance at the same number of products when
  a few large eigenvalues carry most of ||H||_F (not at every point of a network: see benchmarks).
- `lanczos_eigenvalues`: top-k eigenvalues by Lanczos with full reorthogonalisation.
  Both eigenvalue solvers return an `EigenEstimate` with `converged`, the relative `residual` of the
  returned pairs and the `iterations` taken, so a table can say when a value is not to be trusted.
- `power_iteration_eigenvalues`: top-k by power iteration with deflation (PyHessian's method),
  shifted by lambda_min when needed so the largest algebraic eigenvalues come out.
- `hvp_norms`: ||H v|| for given directions (normalised to unit length).
- `exact_hessian`: the full matrix from products with basis vectors (tiny models, tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from wsdlab.analysis.evalset import Batch, LossFn, batch_weights, math_attention
from wsdlab.common.errors import ConfigError

# ---------------------------------------------------------------------------- helpers


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one vector (n,)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def split_like(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Views of a vector (..., n) shaped like `like` (leading dims kept)."""
    lead = vec.shape[:-1]
    out, start = [], 0
    for t in like:
        out.append(vec[..., start:start + t.numel()].reshape(*lead, *t.shape))
        start += t.numel()
    if start != vec.shape[-1]:
        raise ValueError(f"vector has {vec.shape[-1]} entries, parameters have {start}")
    return out


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that require grad (tied weights once)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad")
    return params


def rademacher(count: int, dim: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(count, dim) matrix of +-1 entries, drawn on CPU so the draws do not depend on the device."""
    z = torch.randint(0, 2, (count, dim), generator=generator, dtype=torch.int8)
    return (z.to(dtype) * 2 - 1).to(device)


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# ---------------------------------------------------------------------------- the operator


class HvpOperator(Protocol):
    """A symmetric matrix known through products: what every estimator below needs."""

    dim: int
    dtype: torch.dtype
    device: torch.device
    num_products: int

    def matvec(self, v: Tensor) -> Tensor: ...

    def matmat(self, vs: Tensor) -> Tensor: ...


class HessianOperator:
    """H of L(theta) = sum_b w_b * loss_fn(model, batch_b), applied to vectors of len(theta).

    `params`: the coordinates (default: every parameter requiring grad, tied weights once).
    `cache_graph`: keep the graph of the gradient of all batches and reuse it for every product
    (fast; memory grows with the batches). False recomputes the gradient per batch per product.
    `probe_chunk`: most products computed in one batched backward by `matmat` (1 was fastest for a
    525k-parameter model on one CPU thread; tiny models and GPUs gain from larger chunks).
    The model is switched to eval mode (and left there). With `cache_graph` the operator belongs to
    the weights it was built at: build a new one after changing them.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *,
                 params: Sequence[nn.Parameter] | None = None, cache_graph: bool = True,
                 probe_chunk: int = 16) -> None:
        self.params = list(params) if params is not None else trainable_parameters(model)
        if probe_chunk < 1:
            raise ConfigError(f"probe_chunk must be >= 1, got {probe_chunk}")
        self.model = model.eval()
        self.loss_fn = loss_fn
        self.batches = list(batches)
        self.weights = batch_weights(self.batches)
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.probe_chunk = probe_chunk
        self.cache_graph = cache_graph
        self.num_products = 0
        self._batched_ok = True
        self._grads: list[Tensor] | None = None
        self.loss: float = float("nan")
        if cache_graph:
            self._grads, self.loss = self._gradient(create_graph=True)

    # -- gradient ---------------------------------------------------------------------

    def _batch_gradient(self, batch: Batch, weight: float, create_graph: bool) -> tuple[list[Tensor], float]:
        with math_attention():
            loss = self.loss_fn(self.model, batch) * weight
            grads = torch.autograd.grad(loss, self.params, create_graph=create_graph)
        return list(grads), float(loss.detach())

    def _gradient(self, create_graph: bool) -> tuple[list[Tensor], float]:
        total: list[Tensor] | None = None
        loss = 0.0
        for batch, w in zip(self.batches, self.weights):
            grads, part = self._batch_gradient(batch, w, create_graph)
            loss += part
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        assert total is not None
        return total, loss

    def gradient(self) -> Tensor:
        """grad L (n,), detached."""
        if self._grads is not None:
            return flatten([g.detach() for g in self._grads])
        grads, self.loss = self._gradient(create_graph=False)
        return flatten(grads)

    # -- products ---------------------------------------------------------------------

    def _second_backward(self, grads: Sequence[Tensor], vs: Tensor, batched: bool, retain: bool) -> Tensor:
        outs = split_like(vs, self.params)
        with math_attention():
            hv = torch.autograd.grad(grads, self.params, grad_outputs=outs, retain_graph=retain,
                                     is_grads_batched=batched, allow_unused=True)
        lead = vs.shape[:-1]
        return torch.cat([(h if h is not None else torch.zeros(*lead, *p.shape, dtype=vs.dtype, device=vs.device))
                          .reshape(*lead, -1) for h, p in zip(hv, self.params)], dim=-1)

    def _products(self, vs: Tensor, batched: bool) -> Tensor:
        if self._grads is not None:
            return self._second_backward(self._grads, vs, batched, retain=True)
        total = None
        for batch, w in zip(self.batches, self.weights):
            grads, _ = self._batch_gradient(batch, w, create_graph=True)
            part = self._second_backward(grads, vs, batched, retain=False)
            total = part if total is None else total + part
        assert total is not None
        return total

    def matvec(self, v: Tensor) -> Tensor:
        """H v for v of shape (n,)."""
        if v.shape != (self.dim,):
            raise ValueError(f"vector must have shape ({self.dim},), got {tuple(v.shape)}")
        self.num_products += 1
        return self._products(v.to(self.device, self.dtype), batched=False)

    def matmat(self, vs: Tensor) -> Tensor:
        """H v_i for each row v_i of vs (k, n), `probe_chunk` rows per batched backward."""
        if vs.dim() != 2 or vs.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (k, {self.dim}), got {tuple(vs.shape)}")
        vs = vs.to(self.device, self.dtype)
        outs = []
        for chunk in vs.split(self.probe_chunk):
            self.num_products += chunk.shape[0]
            outs.append(self._batched_products(chunk))
        return torch.cat(outs) if outs else vs.new_zeros(0, self.dim)

    def _batched_products(self, chunk: Tensor) -> Tensor:
        if self._batched_ok and chunk.shape[0] > 1:
            try:
                return self._products(chunk, batched=True)
            except (RuntimeError, NotImplementedError):
                self._batched_ok = False  # an op without a vmap rule: fall back to one product at a time
        return torch.stack([self._products(v, batched=False) for v in chunk])


# ---------------------------------------------------------------------------- trace


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate: value, its standard error, and the products it cost."""

    trace: float
    stderr: float
    products: int
    samples: list[float] = field(default_factory=list)


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Sample mean and its standard error std(ddof=1)/sqrt(m) (nan for m < 2)."""
    m = len(values)
    if m == 0:
        raise ValueError("no samples")
    mean = math.fsum(values) / m
    if m < 2:
        return mean, float("nan")
    var = math.fsum((x - mean) ** 2 for x in values) / (m - 1)
    return mean, math.sqrt(var / m)


def hutchinson_trace(op: HvpOperator, samples: int, seed: int = 0, *, target_stderr: float | None = None,
                     min_samples: int = 10, target_rel_stderr: float | None = None) -> TraceEstimate:
    """Hutchinson's estimator with Rademacher probes, drawn and multiplied a chunk at a time.

    Probes are streamed in chunks of the operator's `probe_chunk` (16 when it has none), so memory
    stays at a chunk of vectors whatever the number of samples. With `target_stderr`, `samples` is
    the most probes used: it stops after the first chunk at which at least `min_samples` probes
    have been used and the standard error is <= `target_stderr` (a fixed accuracy instead of a
    fixed cost). `target_rel_stderr` is the same with the target relative to the running estimate:
    stop when SE <= target_rel_stderr * |mean| (both targets given: either one stops it). The SE of a
    few probes is itself noisy and stopping favours a chance-small one, so keep `min_samples` at 10-30
    or more.
    """
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    if target_stderr is not None and not target_stderr > 0:
        raise ConfigError(f"target_stderr must be > 0, got {target_stderr}")
    if target_rel_stderr is not None and not target_rel_stderr > 0:
        raise ConfigError(f"target_rel_stderr must be > 0, got {target_rel_stderr}")
    gen = _generator(seed)
    chunk = int(getattr(op, "probe_chunk", 16))
    quad: list[float] = []
    for start in range(0, samples, chunk):
        z = rademacher(min(chunk, samples - start), op.dim, gen, op.dtype, op.device)
        # Hutchinson (1990): tr(H) = E[z^T H z] for E[z z^T] = I
        quad += (z * op.matmat(z)).sum(dim=1, dtype=torch.float64).tolist()
        if (target_stderr is not None or target_rel_stderr is not None) and len(quad) >= max(min_samples, 2):
            mean, se = mean_and_stderr(quad)
            if (target_stderr is not None and se <= target_stderr) \
                    or (target_rel_stderr is not None and se <= target_rel_stderr * abs(mean)):
                break
    mean, se = mean_and_stderr(quad)
    return TraceEstimate(mean, se, len(quad), quad)


def hutchpp_trace(op: HvpOperator, products: int, seed: int = 0) -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco, Woodruff 2021, Algorithm 1) with `products` H-products in all.

    A third of the products sketch the top range Q = orth(H S); its trace tr(Q^T H Q) is exact, and
    Hutchinson on the deflated (I - QQ^T) H (I - QQ^T) covers the rest. The standard error is that
    of the Hutchinson part (the sketch part has no sampling error given Q).
    """
    if products < 3:
        raise ConfigError(f"Hutch++ needs products >= 3, got {products}")
    k = products // 3
    rest = products - 2 * k
    gen = _generator(seed)
    s = rademacher(k, op.dim, gen, op.dtype, op.device)
    g = rademacher(rest, op.dim, gen, op.dtype, op.device)
    q, _ = torch.linalg.qr(op.matmat(s).double().T)  # (n, k), orthonormal columns
    hq = op.matmat(q.T.to(op.dtype)).double()  # (k, n)
    top = float((q.T * hq).sum())  # tr(Q^T H Q)
    g_perp = g.double() - (g.double() @ q) @ q.T  # rows (I - QQ^T) g_j
    hg = op.matmat(g_perp.to(op.dtype)).double()
    # Hutch++ eq. (Alg. 1 line 4): tr(Q^T A Q) + 3/m tr(G^T (I-QQ^T) A (I-QQ^T) G)
    quad = (g_perp * hg).sum(dim=1).tolist()
    mean, se = mean_and_stderr(quad)
    return TraceEstimate(top + mean, se, 2 * k + rest, [top + x for x in quad])


# ---------------------------------------------------------------------------- eigenvalues


@dataclass(frozen=True)
class EigenEstimate:
    """Top eigenvalues (descending), their eigenvectors (k, n) when kept, and what the solve cost and reached.

    `residual` is max_i ||H y_i - theta_i y_i|| / rho over the returned pairs (theta_i, y_i), relative to
    rho = the largest |eigenvalue| the solver saw (Lanczos: max |Ritz value|; power iteration: max |value|
    of its solves, lambda_min included), not to each |theta_i|. For a symmetric H each theta_i is within
    residual * rho of an eigenvalue of H, so it is the measurement's error bound. Lanczos reads it from the
    Ritz bound beta_m |s_{m,i}| (no extra products) and is `converged` exactly when residual <= tol (or
    its Krylov space became invariant); power iteration's `converged` is its own stop test (the Rayleigh
    quotient changed by <= tol relatively), and its residual comes from the last product. `iterations`:
    Lanczos steps (the Krylov dimension) or the most iterations one power solve took (= max_iters when
    one ran out); `products` counts every H-product.
    """

    eigenvalues: list[float]
    products: int
    eigenvectors: Tensor | None = None
    converged: bool = True
    residual: float = 0.0
    iterations: int = 0


def _random_unit(op: HvpOperator, seed: int) -> Tensor:
    v = torch.randn(op.dim, generator=_generator(seed), dtype=torch.float64).to(op.device, op.dtype)
    return v / v.norm()


def lanczos_eigenvalues(op: HvpOperator, k: int = 1, max_iters: int = 60, tol: float = 1e-4, seed: int = 0,
                        return_vectors: bool = False) -> EigenEstimate:
    """Top-k (largest algebraic) eigenvalues by Lanczos with full reorthogonalisation.

    Stops when the Ritz residual bound beta_j |s_j| of each of the top k Ritz pairs is below
    `tol * max|theta|`, or after `max_iters` products (at most n); `converged` says which, and
    `residual` is max_i beta_j |s_{j,i}| / max|theta| at exit (so converged iff residual <= tol, unless
    the Krylov space became invariant). The basis (max_iters, n) is kept in memory for the
    reorthogonalisation.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    iters = min(max_iters, op.dim)
    if iters < k:
        raise ConfigError(f"max_iters ({max_iters}) must be >= k ({k})")
    basis = torch.zeros(iters, op.dim, dtype=op.dtype, device=op.device)
    basis[0] = _random_unit(op, seed)
    alphas: list[float] = []
    betas: list[float] = []
    converged = False
    residual = float("nan")
    evals = evecs = None
    for j in range(iters):
        w = op.matvec(basis[j])
        alpha = float(torch.dot(w.double(), basis[j].double()))
        alphas.append(alpha)
        # Lanczos three-term recurrence, then full reorthogonalisation (twice is enough: Parlett)
        w = w - alpha * basis[j] - (betas[-1] * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(w.double().norm())
        t = _tridiagonal(alphas, betas)
        evals, evecs = torch.linalg.eigh(t)
        # Ritz residual ||H y_i - theta_i y_i|| = beta_j |s_{j,i}| (Parlett, The Symmetric Eigenvalue Problem, 13.1)
        scale = max(float(evals.abs().max()), 1e-30)
        residual = (beta * evecs[-1, -k:].abs()).max().item() / scale
        if j + 1 >= k and residual <= tol:
            converged = True
            break
        if j + 1 == iters:
            break
        if beta <= 1e-10 * max(abs(alpha), 1e-30):
            converged = True  # invariant subspace found: the Ritz values are exact
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    assert evals is not None and evecs is not None
    m = len(alphas)
    top = evals.flip(0)[:k]
    vectors = None
    if return_vectors:
        vectors = (evecs[:, -k:].flip(1).T.to(op.dtype) @ basis[:m])  # (k, n) Ritz vectors
    return EigenEstimate([float(x) for x in top], m, vectors, converged, residual, m)


def _tridiagonal(alphas: Sequence[float], betas: Sequence[float]) -> Tensor:
    m = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[: m - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return t


class ShiftedOperator:
    """H - shift * I, through the products of H (power iteration on a positive semi-definite shift)."""

    def __init__(self, op: HvpOperator, shift: float) -> None:
        self.op, self.shift = op, shift
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device

    @property
    def num_products(self) -> int:
        return self.op.num_products

    def matvec(self, v: Tensor) -> Tensor:
        return self.op.matvec(v) - self.shift * v.to(self.device, self.dtype)

    def matmat(self, vs: Tensor) -> Tensor:
        return self.op.matmat(vs) - self.shift * vs.to(self.device, self.dtype)


@dataclass(frozen=True)
class _PowerSolve:
    values: list[float]
    vectors: list[Tensor]
    converged: bool
    residuals: list[float]  # ||H v - value v|| of each pair (absolute; a shift cancels out of it)
    iterations: int  # the most iterations one eigenvalue took


def _power_deflated(op: HvpOperator, k: int, max_iters: int, tol: float, seed: int) -> _PowerSolve:
    """k dominant (largest-magnitude) eigenpairs, each found orthogonal to the ones before (PyHessian's loop)."""
    found: list[Tensor] = []
    values: list[float] = []
    residuals: list[float] = []
    all_converged, most = True, 0
    for i in range(k):
        v = _random_unit(op, seed + i)
        value, converged, residual, it = float("nan"), False, float("nan"), 0
        for it in range(1, max_iters + 1):
            for u in found:
                v = v - torch.dot(v, u) * u
            v = v / v.norm()
            hv = op.matvec(v)
            # Rayleigh quotient v^T H v of the unit vector v, and its residual ||H v - (v^T H v) v||
            new = float(torch.dot(hv.double(), v.double()))
            residual = float((hv.double() - new * v.double()).norm())
            norm = hv.norm()
            if norm == 0:
                value, converged = 0.0, True
                break
            v = hv / norm
            if not math.isnan(value) and abs(new - value) <= tol * (abs(value) + 1e-12):
                value, converged = new, True
                break
            value = new
        all_converged &= converged
        most = max(most, it)
        found.append(v)
        values.append(value)
        residuals.append(residual)
    return _PowerSolve(values, found, all_converged, residuals, most)


def power_iteration_eigenvalues(op: HvpOperator, k: int = 1, max_iters: int = 100, tol: float = 1e-4,
                                seed: int = 0, largest: bool = True) -> EigenEstimate:
    """Top-k eigenvalues by power iteration with deflation (PyHessian's method), descending.

    Each eigenvalue iterates v <- H v / ||H v|| (v kept orthogonal to the eigenvectors found before)
    until the Rayleigh quotient changes by less than `tol` relatively (`converged`). Plain power iteration finds
    the largest *magnitude* (`largest=False`: PyHessian's behaviour). With `largest=True` the largest
    algebraic eigenvalues are returned: unless the dominant eigenvalue is positive and k = 1, the
    smallest eigenvalue lambda_min is found first and the iteration runs on H - lambda_min I (PSD).
    `residual`: max ||H v - theta v|| of the returned pairs at their last product, over the largest
    |eigenvalue| found (EigenEstimate).
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    start = op.num_products
    first = _power_deflated(op, 1 if largest else k, max_iters, tol, seed)
    if not largest or (k == 1 and first.values[0] >= 0):
        values, vectors, residuals = first.values, first.vectors, first.residuals
        ok, most, seen = first.converged, first.iterations, list(first.values)
    else:
        lam_min, ok, most = first.values[0], first.converged, first.iterations
        seen = [lam_min]
        if lam_min >= 0:  # the dominant one is lambda_max: the bottom is dominant for H - lambda_max I
            low = _power_deflated(ShiftedOperator(op, lam_min), 1, max_iters, tol, seed + k)
            lam_min, ok, most = low.values[0] + lam_min, ok and low.converged, max(most, low.iterations)
            seen.append(lam_min)
        top = _power_deflated(ShiftedOperator(op, lam_min), k, max_iters, tol, seed)
        values = [x + lam_min for x in top.values]
        vectors, residuals = top.vectors, top.residuals
        ok, most = ok and top.converged, max(most, top.iterations)
        seen += values
    scale = max(max((abs(x) for x in seen if not math.isnan(x)), default=0.0), 1e-30)
    order = sorted(range(len(values)), key=lambda j: -values[j])
    return EigenEstimate([values[j] for j in order], op.num_products - start,
                         torch.stack([vectors[j] for j in order]), ok, max(residuals) / scale, most)


def hvp_norms(op: HvpOperator, directions: Sequence[Tensor]) -> list[float]:
    """||H v / ||v|| || for each direction v (n,): the curvature's pull along that direction."""
    if not directions:
        return []
    vs = torch.stack([d.to(op.device, op.dtype).reshape(-1) for d in directions])
    norms = vs.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("directions: a direction has zero norm")
    return op.matmat(vs / norms).double().norm(dim=1).tolist()


def exact_hessian(op: HvpOperator, chunk: int = 64) -> Tensor:
    """The full n x n Hessian from products with the basis vectors e_i (tiny models only)."""
    if op.dim > 20_000:
        raise ConfigError(f"exact Hessian of {op.dim} parameters is too large (limit 20000); use trace/top-eigen")
    rows = []
    for start in range(0, op.dim, chunk):
        eye = torch.zeros(min(chunk, op.dim - start), op.dim, dtype=op.dtype, device=op.device)
        eye[torch.arange(eye.shape[0]), torch.arange(start, start + eye.shape[0])] = 1
        rows.append(op.matmat(eye))
    return torch.cat(rows)  # row i = H e_i


@dataclass(frozen=True)
class ExactSpectrum:
    """Trace and descending eigenvalues of the exact (symmetrised) Hessian."""

    trace: float
    eigenvalues: list[float]
    asymmetry: float  # max |H - H^T| (round-off check)


def exact_spectrum(op: HvpOperator, chunk: int = 64) -> ExactSpectrum:
    """tr H and all eigenvalues (torch.linalg.eigvalsh of (H + H^T)/2), descending."""
    return spectrum_of(exact_hessian(op, chunk))


def spectrum_of(h: Tensor) -> ExactSpectrum:
    """Trace, descending eigenvalues and asymmetry of a full Hessian matrix."""
    h = h.double()
    asym = float((h - h.T).abs().max())
    evals = torch.linalg.eigvalsh((h + h.T) / 2).flip(0)
    return ExactSpectrum(float(torch.trace(h)), evals.tolist(), asym)
