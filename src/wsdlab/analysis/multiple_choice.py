"""Multiple-choice tasks scored by log-likelihood, as lm-evaluation-harness scores them.

lm-evaluation-harness (`api/task.py`, `process_results` of a `multiple_choice` task): each request is
(context, target_delimiter + choice) and its score the sum of the log-probabilities of the continuation
tokens given the context; `acc` = 1 when the argmax of these sums is the gold choice; `acc_norm` divides
each sum by the choice's length (`completion_len = np.array([float(len(i)) for i in choices])`: characters
of the choice without the delimiter; bytes for the ASCII choices here) before the argmax. Context and
continuation are encoded apart and concatenated (the harness encodes the whole and splits it; with a
byte-level BPE the two agree when the continuation starts with the delimiter, a new pre-token); the left
of a too-long context is cut.

The offline default task (`stdlib_name_task`): "pick the right function name for a docstring among four",
built from the corpus's held-out modules that the SFT set does not use (`data.sft.eval_documents`):
context `# <docstring summary>\\ndef`, choices `<name>(` (after the delimiter " ") for the true name and
three other names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class MCItem:
    context: str
    choices: tuple[str, ...]  # without the delimiter
    gold: int
    delimiter: str = " "  # lm-evaluation-harness's target_delimiter, put before each choice


def stdlib_name_task(documents: Sequence[str], *, num_choices: int = 4, seed: int = 0,
                     max_items: int | None = None) -> list[MCItem]:
    """The function-name task of `documents`: one item per documented public function (unique names)."""
    from wsdlab.data.sft import _functions

    found: dict[str, str] = {}
    for source in documents:
        for name, _sig, doc, _code in _functions(source):
            found.setdefault(name, doc.splitlines()[0].strip())
    names = sorted(found)
    if len(names) < num_choices:
        return []
    rng = np.random.default_rng(seed)
    items = []
    for name in names:
        others = [n for n in names if n != name]
        picks = [others[i] for i in rng.choice(len(others), num_choices - 1, replace=False)]
        gold = int(rng.integers(num_choices))
        choices = picks[:gold] + [name] + picks[gold:]
        items.append(MCItem(f"# {found[name]}\ndef", tuple(f"{c}(" for c in choices), gold))
    return items[:max_items] if max_items is not None else items


@torch.no_grad()
def continuation_logprobs(model: nn.Module, tokenizer, context: str, continuations: Sequence[str], max_len: int,
                          device: str = "cpu") -> list[float]:
    """sum_i log p(continuation token i | context, earlier continuation tokens), one per continuation."""
    ctx = tokenizer.encode(context, add_special_tokens=False).ids
    out = []
    for cont in continuations:
        cids = tokenizer.encode(cont, add_special_tokens=False).ids
        ids = (ctx + cids)[-(max_len + 1):]
        n = min(len(cids), len(ids) - 1)
        x = torch.tensor(ids[:-1], device=device)[None]
        logp = torch.log_softmax(model(x).float()[0], dim=-1)  # (T, V)
        targets = torch.tensor(ids[1:], device=device)
        picked = logp[torch.arange(len(targets), device=device), targets]
        out.append(float(picked[-n:].sum()))
    return out


def score_items(model: nn.Module, tokenizer, items: Sequence[MCItem], max_len: int, device: str = "cpu") -> dict[str, float]:
    """{acc, acc_norm, n}: lm-evaluation-harness's accuracy and byte-length-normalised accuracy."""
    was = model.training
    model.eval()
    acc = acc_norm = 0
    try:
        for item in items:
            conts = [item.delimiter + c for c in item.choices]
            lls = continuation_logprobs(model, tokenizer, item.context, conts, max_len, device)
            acc += int(int(np.argmax(lls)) == item.gold)
            normed = [ll / float(len(c)) for ll, c in zip(lls, item.choices)]  # completion_len: len(choice)
            acc_norm += int(int(np.argmax(normed)) == item.gold)
    finally:
        model.train(was)
    n = max(len(items), 1)
    return {"acc": acc / n, "acc_norm": acc_norm / n, "n": len(items)}
