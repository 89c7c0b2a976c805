"""Linear probes per layer: how much next-token information each layer's hidden state holds.

For each layer l (0 = the embeddings, L = after the last block), a copy of the LM head
(`model.head`: final norm + output projection) is trained briefly with AdamW on the frozen
hidden states `model.hidden_states(idx)[l]` of training batches, then evaluated on held-out
batches. Starting from the LM head makes the last layer's probe start at the model's own
predictions. The head copy is a set of cloned parameters swapped into `model.head` with
`torch.func.functional_call`, so neither the model nor its other weights are copied or changed.

Table columns: layer, loss, perplexity, initial_loss, initial_perplexity
(`probe_table` along a cooldown adds step and rel_perplexity = perplexity / that of the same
layer at the reference step, the cooldown start).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from wsdlab.analysis.evalset import batch_weights
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row
from wsdlab.models.config import LMConfig


class _Head(nn.Module):
    """forward(h) = model.head(h): lets functional_call swap the head's parameters."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, h: Tensor) -> Tensor:
        return self.model.head(h)


def _check_lm(model: nn.Module) -> None:
    if not (hasattr(model, "hidden_states") and hasattr(model, "head")):
        raise ConfigError(f"probes need a language model with hidden_states() and head(); got {type(model).__name__}")


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters `model.head` reads (found by one backward through the head)."""
    _check_lm(model)
    named = list(model.named_parameters())
    p0 = named[0][1]
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, LMConfig):
        raise ConfigError("probes need a language model whose cfg is a wsdlab LMConfig (for d_model)")
    h = torch.ones(1, 1, cfg.d_model, device=p0.device, dtype=p0.dtype)
    with torch.enable_grad():
        out = model.head(h).float().sum()
        grads = torch.autograd.grad(out, [p for _, p in named], allow_unused=True)
    names = [n for (n, _), g in zip(named, grads) if g is not None]
    if not names:
        raise ValueError("model.head uses no parameters")
    return names


def _ce(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


@torch.no_grad()
def _states(model: nn.Module, batches: Sequence[Tensor]) -> list[tuple[list[Tensor], Tensor]]:
    """(hidden states of every layer, targets) per LM batch (B, T+1)."""
    out = []
    for b in batches:
        if not isinstance(b, Tensor) or b.dim() != 2:
            raise ValueError("probes need LM batches: LongTensor (B, T+1)")
        out.append(([h.detach() for h in model.hidden_states(b[:, :-1])], b[:, 1:]))
    return out


def _eval(head: _Head, params: dict[str, Tensor], states: Sequence[tuple[list[Tensor], Tensor]], layer: int,
          weights: Sequence[float]) -> float:
    with torch.no_grad():
        return sum(w * float(_ce(functional_call(head, params, (hs[layer],)), t)) for (hs, t), w in zip(states, weights))


def probe_layers(model: nn.Module, train_batches: Sequence[Tensor], eval_batches: Sequence[Tensor], *,
                 steps: int = 50, lr: float = 1e-3, weight_decay: float = 0.0,
                 layers: Sequence[int] | None = None) -> list[Row]:
    """Train one head copy per layer on `train_batches` (cycled, `steps` AdamW steps), score on `eval_batches`.

    The transformer is frozen (hidden states computed once, no grad); the model is not modified.
    """
    _check_lm(model)
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    if not train_batches or not eval_batches:
        raise ValueError("probes need at least one training batch and one evaluation batch")
    model.eval()
    names = head_parameter_names(model)
    own = dict(model.named_parameters())
    head = _Head(model)
    train_states, eval_states = _states(model, train_batches), _states(model, eval_batches)
    eval_w = batch_weights(eval_batches)
    num_layers = len(train_states[0][0])
    layers = list(range(num_layers)) if layers is None else list(layers)
    bad = [l for l in layers if not 0 <= l < num_layers]
    if bad:
        raise ConfigError(f"layers {bad} out of range 0..{num_layers - 1}")
    rows = []
    for layer in layers:
        params = {f"model.{n}": own[n].detach().clone().requires_grad_(True) for n in names}
        initial = _eval(head, params, eval_states, layer, eval_w)
        opt = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=weight_decay)
        for i in range(steps):
            hs, t = train_states[i % len(train_states)]
            loss = _ce(functional_call(head, params, (hs[layer],)), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        final = _eval(head, {k: v.detach() for k, v in params.items()}, eval_states, layer, eval_w)
        rows.append({"layer": layer, "loss": final, "perplexity": _exp(final),
                     "initial_loss": initial, "initial_perplexity": _exp(initial)})
    return rows


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


def add_relative(rows: Sequence[Row], reference_step: int, key: str = "perplexity") -> list[Row]:
    """Add rel_<key> = row[key] / (the same layer's value at `reference_step`) to rows with step and layer."""
    ref = {r["layer"]: r[key] for r in rows if r["step"] == reference_step}
    if not ref:
        raise ConfigError(f"no probe rows at the reference step {reference_step}")
    return [{**r, f"rel_{key}": r[key] / ref[r["layer"]] if r["layer"] in ref else math.nan} for r in rows]
