"""Bias and variance of the cooldown runs across data orders (Dremov et al., TMLR 2025, Sec. 4.1 and App. C).

For one cooldown shape i there are N runs s_in (n = 1..N, one data-order seed each) started from the
same pre-cooldown checkpoint, and longer reference runs r_n standing in for the ground truth.
Validation tokens are k = 1..K; s_ink and r_nk are the predicted next-token distributions (over V).

  kl     (eq. 1)  bias_i     = (1/K) sum_k KL( (1/N) sum_n r_nk , (1/N) sum_n s_ink )
                  variance_i = (1/N) sum_n || s_ink - mean_n s_ink ||^2_{axis=k}
  weight (eq. 3)  bias_i     = || (1/N) ( sum_n r_n - sum_n s_in ) ||
                  variance_i = 1/(N-1) sum_n || s_in - mean_n s_in ||^2
  loss   (eq. 4)  bias_i     = (1/N) sum_n s_in                        (s_in: validation loss of run n)
                  variance_i = (1/N) sum_n || s_in - mean_n s_in ||^2
  App. C          avg_loss_var_loss:   bias = L(mean_n theta(s_in)), variance = the eq. 4 variance (Fig. 17a)
                  avg_loss_var_weight: bias = L(mean_n theta(s_in)), variance = the eq. 3 variance (Fig. 17b)

Readings of the printed text (where it leaves a choice):
- eq. 1 variance: "||.||^2_{axis=k}" is read as the squared L2 norm over the V classes at each token k,
  averaged over the K tokens like the bias (a sum over k would grow with the size of the validation set).
  KL(p, q) is KL(p || q) with p the references' mean prediction, as in the bias's prose ("distance to a
  better solution").
- eq. 3 bias: the prose ("the distance between the mean reference and experimental models") is the plain
  L2 norm of the difference of the two means; with as many references as runs this is the printed
  (1/N)(sum_n r_n - sum_n s_in), and with a different number of references each side keeps its own mean.
  The weight vector (size p) holds each trainable parameter once (`model.named_parameters()`: a tied
  embedding counts once, buffers are not parameters). With N = 1 the variance 1/(N-1) is undefined: NaN.
- eq. 4 has no reference: the bias is the runs' mean validation loss itself, the variance the population one.

L is the mean validation cross-entropy (nats) over the same fixed validation batches as the KL terms.
KL is computed STREAMING: one validation batch at a time, holding at most N x B x T x V probabilities.

Table `bias_variance` columns: shape, space, bias, variance, n_runs, bias_se, variance_se, reference_val_loss
    space in {kl, weight, loss, avg_loss_var_loss, avg_loss_var_weight}
    bias_se / variance_se (kl, weight, loss; N >= 3 runs, else empty): the leave-one-run-out jackknife
    standard error over the shape's runs, sqrt((N-1)/N sum_j (theta_(j) - mean_j theta_(j))^2) (Efron &
    Stein 1981; the references are held fixed), so a claim comparing two shapes has an interval.
    reference_val_loss (the same on every row): (1/N_ref) sum_n L(r_n), the references' mean validation loss
    on the same fixed validation batches as the loss space, so it compares directly with the loss-space bias
    of every shape. The references stand for "a good solution" (§4.1); reference_val_loss < every shape's
    loss-space bias is the check that they are one (better than every cooldown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import track
from torch import nn

from wsdlab.analysis.averaging import average_models
from wsdlab.analysis.units import (
    COOLDOWNS,
    AnalysisUnit,
    RunSelector,
    UnitContext,
    register_unit,
)
from wsdlab.analysis.weights import Weights, trainable_weights
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Batch, Row
from wsdlab.train import RunDir
from wsdlab.train.evaluate import eval_index_chunks, to_device

if TYPE_CHECKING:
    from wsdlab.data import DataBundle

SPACES = ("kl", "weight", "loss", "avg_loss_var_loss", "avg_loss_var_weight")


# ---------------------------------------------------------------- predictive distributions


def fixed_val_batches(data: DataBundle, num_batches: int, batch_size: int) -> list[Batch]:
    """The validation batches `wsdlab.train.evaluate` uses (the first items of the val split, in order)."""
    return [data.val_batch(idx) for idx in eval_index_chunks(data.num_val, num_batches, batch_size)]


def split_batch(batch: Batch) -> tuple[Any, torch.Tensor]:
    """(inputs, targets): LM batch (B, T+1) -> ids[:, :-1], ids[:, 1:]; vision (images, labels) as is."""
    if isinstance(batch, (tuple, list)):
        images, labels = batch
        return images, labels
    return batch[:, :-1], batch[:, 1:]


@torch.no_grad()
def predictive_log_probs(model: nn.Module, batch: Batch, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(. | context) as float32 (..., V), targets (...)) of `model` on `batch` (B,T,V for LMs, B,C for CNNs)."""
    inputs, targets = split_batch(to_device(batch, device))
    logits = model(inputs)
    return torch.log_softmax(logits.float(), dim=-1), targets


def token_nll_sum(log_probs: torch.Tensor, targets: torch.Tensor) -> float:
    """sum over tokens of -log p(target): cross-entropy numerator (divide by targets.numel())."""
    return -float(log_probs.gather(-1, targets.unsqueeze(-1)).sum(dtype=torch.float64))


# ---------------------------------------------------------------- KL space (eq. 1), streaming


def log_mean_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """log of the mean distribution over dim 0: log((1/N) sum_n p_n) = logsumexp_n(log p_n) - log N."""
    return torch.logsumexp(log_probs, dim=0) - math.log(log_probs.shape[0])


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last dim, with 0 log 0 = 0."""
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1)


def kl_bias_variance_sums(ref_log_probs: torch.Tensor, run_log_probs: torch.Tensor,
                          chunk_tokens: int = 256) -> tuple[float, float, int]:
    """Eq. 1 summed over the tokens of one batch: (sum_k KL, sum_k variance_k, number of tokens).

    ref_log_probs (N_ref, ..., V) and run_log_probs (N, ..., V) are log-probabilities on the same tokens.
    Tokens are processed `chunk_tokens` at a time in float64 (bounded extra memory for large vocabularies).
    """
    if ref_log_probs.shape[1:] != run_log_probs.shape[1:]:
        raise ValueError(f"reference log-probs {tuple(ref_log_probs.shape)} and run log-probs "
                         f"{tuple(run_log_probs.shape)} must cover the same tokens and classes")
    v = run_log_probs.shape[-1]
    refs = ref_log_probs.reshape(ref_log_probs.shape[0], -1, v)
    runs = run_log_probs.reshape(run_log_probs.shape[0], -1, v)
    kl_sum = var_sum = 0.0
    for lo in range(0, runs.shape[1], chunk_tokens):
        log_r = log_mean_probs(refs[:, lo:lo + chunk_tokens].double())
        run = runs[:, lo:lo + chunk_tokens].double()
        log_s = log_mean_probs(run)
        kl_sum += float(kl_divergence(log_r, log_s).sum())  # sum_k KL(mean_n r_nk || mean_n s_ink)
        # sum_k (1/N) sum_n ||s_ink - mean_n s_ink||^2
        var_sum += float((run.exp() - log_s.exp()).square().sum(dim=-1).mean(dim=0).sum())
    return kl_sum, var_sum, runs.shape[1]


class KLBiasVariance:
    """Streaming eq. 1: feed one batch of (reference, run) log-probs at a time; never holds all tokens."""

    def __init__(self) -> None:
        self.kl_sum = 0.0
        self.var_sum = 0.0
        self.tokens = 0

    def update(self, ref_log_probs: torch.Tensor, run_log_probs: torch.Tensor) -> None:
        kl, var, n = kl_bias_variance_sums(ref_log_probs, run_log_probs)
        self.kl_sum += kl
        self.var_sum += var
        self.tokens += n

    def result(self) -> tuple[float, float]:
        """(bias, variance) averaged over all tokens seen."""
        if self.tokens == 0:
            raise ValueError("KL bias-variance: no tokens were added")
        return self.kl_sum / self.tokens, self.var_sum / self.tokens


# ---------------------------------------------------------------- weight space (eq. 3) and loss space (eq. 4)


def weight_bias_variance(ref_weights: Sequence[Weights], run_weights: Sequence[Weights]) -> tuple[float, float]:
    """Eq. 3: (|| mean_n r_n - mean_n s_in ||, 1/(N-1) sum_n || s_in - mean_n s_in ||^2) in weight space.

    Each weight set is {parameter name: tensor} with every trainable parameter once (`trainable_weights`);
    sums run over the runs' parameter names in float64, one parameter at a time. N = 1 gives a NaN variance.
    """
    if not ref_weights or not run_weights:
        raise ValueError("weight bias-variance: need at least one reference and one run weight set")
    names = list(run_weights[0])
    for group_name, group in (("reference", ref_weights), ("run", run_weights)):
        for i, w in enumerate(group):
            missing = [k for k in names if k not in w]
            if missing:
                raise ValueError(f"weight bias-variance: {group_name} weight set {i} lacks {missing[:5]}")
    bias_sq = 0.0
    spread = 0.0
    for k in names:
        runs = torch.stack([w[k].detach().double().cpu() for w in run_weights])
        refs = torch.stack([w[k].detach().double().cpu() for w in ref_weights])
        if runs.shape[1:] != refs.shape[1:]:
            raise ValueError(f"weight bias-variance: '{k}' is {tuple(refs.shape[1:])} in the references "
                             f"but {tuple(runs.shape[1:])} in the runs")
        mean_run = runs.mean(dim=0)
        bias_sq += float((refs.mean(dim=0) - mean_run).square().sum())
        spread += float((runs - mean_run).square().sum())
    n = len(run_weights)
    return math.sqrt(bias_sq), (spread / (n - 1) if n > 1 else math.nan)


def loss_bias_variance(run_losses: Sequence[float]) -> tuple[float, float]:
    """Eq. 4: ((1/N) sum_n s_in, (1/N) sum_n (s_in - mean s_i)^2) of the runs' validation losses s_in."""
    if len(run_losses) == 0:
        raise ValueError("loss bias-variance: need at least one run loss")
    runs = np.asarray(run_losses, dtype=float)
    return float(runs.mean()), float(runs.var())


def jackknife_se(values: Sequence[float]) -> float | None:
    """Jackknife standard error from the N leave-one-out estimates: sqrt((N-1)/N sum_j (t_j - mean t)^2)."""
    n = len(values)
    if n < 2 or not all(math.isfinite(v) for v in values):
        return None
    m = math.fsum(values) / n
    return math.sqrt((n - 1) / n * math.fsum((v - m) ** 2 for v in values))


def _leave_one_out(n: int) -> list[list[int]]:
    """Index sets leaving out one run each; none when fewer than 3 runs (a variance needs 2)."""
    return [[i for i in range(n) if i != j] for j in range(n)] if n >= 3 else []


def bias_variance_rows(shape: str, *, kl: tuple[float, float], weight: tuple[float, float],
                       loss: tuple[float, float], avg_model_loss: float, n_runs: int,
                       reference_val_loss: float,
                       se: Mapping[str, tuple[float | None, float | None]] | None = None) -> list[Row]:
    """The five `bias_variance` rows of one shape (App. C rows reuse the loss and weight variances), each
    carrying the references' mean validation loss; `se` gives (bias_se, variance_se) per space (kl, weight,
    loss) when the runs allow a jackknife."""
    pairs = {
        "kl": kl,
        "weight": weight,
        "loss": loss,
        "avg_loss_var_loss": (avg_model_loss, loss[1]),
        "avg_loss_var_weight": (avg_model_loss, weight[1]),
    }
    se = se or {}
    return [{"shape": shape, "space": s, "bias": float(b), "variance": float(v), "n_runs": n_runs,
             "bias_se": se.get(s, (None, None))[0], "variance_se": se.get(s, (None, None))[1],
             "reference_val_loss": float(reference_val_loss)} for s, (b, v) in pairs.items()]


# ---------------------------------------------------------------- the analysis over run directories


def _stack_log_probs(models: Sequence[nn.Module], batch: Batch, device: str) -> tuple[torch.Tensor, list[float]]:
    """(N, ..., V) log-probs of `models` on `batch` and each model's token NLL sum."""
    outs, nll = [], []
    for m in models:
        lp, targets = predictive_log_probs(m, batch, device)
        outs.append(lp)
        nll.append(token_nll_sum(lp, targets))
    return torch.stack(outs), nll


REFERENCE_CACHE_BYTES = 1 << 30  # the references' mean distributions kept across shapes up to this size


class _ReferenceMeans:
    """The references' log mean distribution per validation batch, computed once for every shape when
    they fit in REFERENCE_CACHE_BYTES (else recomputed per shape, as the streaming design allows)."""

    def __init__(self, refs: Sequence[nn.Module], batches: Sequence[Batch], device: str) -> None:
        self.refs, self.batches, self.device = refs, batches, device
        self.cache: dict[int, torch.Tensor] | None = {}
        self.budget = REFERENCE_CACHE_BYTES

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        mean = _references_log_mean(self.refs, self.batches[i], self.device)
        if self.cache is not None:
            if mean.element_size() * mean.numel() * len(self.batches) <= self.budget:
                self.cache[i] = mean
            else:
                self.cache = None  # too large to keep: recompute per shape
        return mean


def _references_log_mean(models: Sequence[nn.Module], batch: Batch, device: str) -> torch.Tensor:
    """log of the references' mean distribution on `batch`, kept as a 1-model stack (1, ..., V).

    The references are folded in one at a time (log-add-exp), so only one model's (..., V) is held.
    """
    acc: torch.Tensor | None = None
    for m in models:
        lp = predictive_log_probs(m, batch, device)[0].double()
        acc = lp if acc is None else torch.logaddexp(acc, lp)
    assert acc is not None
    return (acc - math.log(len(models))).unsqueeze(0)


def _mean_loss(model: nn.Module, batches: Sequence[Batch], device: str) -> float:
    """Mean cross-entropy of `model` over every target of `batches` (equals `wsdlab.train.evaluate`)."""
    total, count = 0.0, 0
    for batch in batches:
        lp, targets = predictive_log_probs(model, batch, device)
        total += token_nll_sum(lp, targets)
        count += targets.numel()
    return total / count


def bias_variance_table(
    shape_runs: Mapping[str, Sequence[RunDir]],
    references: Sequence[RunDir],
    data: DataBundle,
    *,
    num_batches: int = 8,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = False,
) -> list[Row]:
    """Bias and variance of each shape's runs in KL, weight and loss space (+ App. C variants), and the
    references' mean validation loss on the same batches (`reference_val_loss`, every row).

    `shape_runs` maps a cooldown shape to its runs (one per data-order seed); `references` are the
    longer reference runs. Models in memory: the references plus one shape's runs at a time.
    """
    if not references:
        raise ConfigError("bias_variance: references is empty")
    batches = fixed_val_batches(data, num_batches, batch_size)
    refs = [r.load_model(None, device) for r in references]
    ref_weights = [trainable_weights(m) for m in refs]
    reference_val_loss = float(np.mean([_mean_loss(m, batches, device) for m in refs]))
    rows: list[Row] = []
    ref_means = _ReferenceMeans(refs, batches, device)
    for shape, runs in track(shape_runs.items(), description="bias-variance", disable=not progress, transient=True):
        if not runs:
            raise ConfigError(f"bias_variance: shape '{shape}' has no runs")
        models = [r.load_model(None, device) for r in runs]
        acc = KLBiasVariance()
        loo = _leave_one_out(len(models))
        loo_acc = [KLBiasVariance() for _ in loo]
        run_nll = np.zeros(len(models))
        tokens = 0
        for i, batch in enumerate(batches):
            run_lp, s_nll = _stack_log_probs(models, batch, device)
            acc.update(ref_means[i], run_lp)
            for keep, a in zip(loo, loo_acc):
                a.update(ref_means[i], run_lp[keep])
            run_nll += s_nll
            tokens += run_lp[0].shape[:-1].numel()
        run_weights = [trainable_weights(m) for m in models]
        losses = list(run_nll / tokens)
        se: dict[str, tuple[float | None, float | None]] = {}
        if loo:
            kl_loo = [a.result() for a in loo_acc]
            w_loo = [weight_bias_variance(ref_weights, [run_weights[k] for k in keep]) for keep in loo]
            l_loo = [loss_bias_variance([losses[k] for k in keep]) for keep in loo]
            for space, est in (("kl", kl_loo), ("weight", w_loo), ("loss", l_loo)):
                se[space] = (jackknife_se([b for b, _ in est]), jackknife_se([v for _, v in est]))
        rows += bias_variance_rows(
            shape,
            kl=acc.result(),
            weight=weight_bias_variance(ref_weights, run_weights),
            loss=loss_bias_variance(losses),
            avg_model_loss=_mean_loss(average_models(models), batches, device),
            n_runs=len(runs),
            se=se,
            reference_val_loss=reference_val_loss,
        )
    return rows


@register_unit
class BiasVariance(AnalysisUnit):
    """Bias and variance of each shape's final models against the reference runs (eq. 1, 3, 4; App. C)."""

    name = "bias_variance"
    inputs = {"cooldowns": COOLDOWNS, "references": RunSelector(stage=["reference"])}
    tables = ("bias_variance",)

    def compute(self, ctx: UnitContext, options: Any) -> dict[str, list[Row]]:
        return {"bias_variance": bias_variance_table(ctx.groups("cooldowns"), ctx.runs("references"), ctx.data,
                                                     **ctx.eval_kwargs)}
