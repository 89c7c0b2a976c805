"""Consistent names, order and colours for groups (cooldown shapes, schedules) across every figure."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

# The paper's order of cooldown shapes, then schedules of the universality and WSO studies, then the
# study runner's label of the base (stable-phase) run in geometry tables.
KNOWN_ORDER: tuple[str, ...] = (
    "linear", "cosine", "mirror_cosine", "square", "sqrt", "lowered_linear",
    "wsd", "wso", "warmup_cosine", "warmup_linear", "longer_run", "reference", "stable",
)

_LABELS: dict[str, str] = {
    "sqrt": "1-sqrt",
    "mirror_cosine": "mirror cosine",
    "lowered_linear": "lowered linear",
    "warmup_cosine": "warmup-cosine",
    "warmup_linear": "warmup-linear",
    "longer_run": "longer run",
    "wsd": "WSD",
    "wso": "WSO",
    "stable": "stable phase (base run)",
}

# Colour-blind-friendly palette (Okabe-Ito, then tab10 extras); a group keeps its colour in every figure.
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9",
    "#000000", "#F0E442", "#7f7f7f", "#8c564b", "#17becf", "#bcbd22", "#999933",
)
# Other names (e.g. 'lowered_linear-0.5', variants) hash into colours not used above.
EXTRA_PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#e377c2", "#393b79", "#637939",
    "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363",
)


def _base(name: str) -> tuple[str, str]:
    """Split a study label into (shape, parameter): 'lowered_linear-0.7' -> ('lowered_linear', '0.7')."""
    for base in ("lowered_linear", "expr"):
        if name.startswith(base) and name != base:
            return base, re.sub(r"^(-|_p=?|_)", "", name[len(base):])
    return name, ""


def group_label(name: object) -> str:
    """Readable label of a shape/schedule name, e.g. 'sqrt' -> '1-sqrt'; unknown names unchanged."""
    text = str(name)
    base, param = _base(text)
    if base == "lowered_linear" and param:
        return f"lowered linear (p={param})"
    if base == "expr" and param:
        return f"f(x) = {param}"
    return _LABELS.get(text, text.replace("_", " "))


def order_groups(names: Iterable[object]) -> list[object]:
    """Unique names, known ones in the paper's order first, the rest in first-seen order."""
    unique = list(dict.fromkeys(names))
    rank = {n: i for i, n in enumerate(KNOWN_ORDER)}

    def key(item: tuple[int, object]) -> tuple[int, int]:
        pos, name = item
        return (rank.get(_base(str(name))[0], len(KNOWN_ORDER)), pos)

    return [name for _, name in sorted(enumerate(unique), key=key)]


def group_color(name: object) -> str:
    """A fixed colour per known name; other names a stable colour from a hash of the text (same in every figure)."""
    text = str(name)
    if text in KNOWN_ORDER:
        return PALETTE[KNOWN_ORDER.index(text) % len(PALETTE)]
    return EXTRA_PALETTE[zlib.crc32(text.encode()) % len(EXTRA_PALETTE)]


_SPACES: dict[str, str] = {
    "kl": "KL",
    "weight": "weight",
    "loss": "loss",
    "avg_loss_var_loss": "averaged-model loss / loss variance",
    "avg_loss_var_weight": "averaged-model loss / weight variance",
}
_METRICS: dict[str, str] = {
    "grad_momentum_cos": "cos(gradient, momentum), mean over tensors",
    "grad_momentum_cos_global": "cos(gradient, momentum), all parameters as one vector",
    "update_grad_cos": "cos(gradient, update)",
    "grad_norm": "gradient norm",
    "param_norm": "parameter norm",
}
_PANELS: dict[str, str] = {
    "betas_p": "both betas → β^p (p < 1: larger β, longer memory)",
    "beta2_p": "β2 → β2^p, β1 kept (p < 1: larger β2, longer memory)",
    "batch_x": "batch size × k, betas kept",
    "batch_x_half_life": "batch size × k, betas → β^k (same token half-life)",
    "weight_decay_off": "weight decay off",
    "reset_optimizer": "optimizer reset",
}


def space_label(space: object) -> str:
    """Readable name of a bias-variance space, e.g. 'kl' -> 'KL'."""
    return _SPACES.get(str(space), str(space).replace("_", " "))


def metric_label(metric: object) -> str:
    """Readable name of a logged metric, e.g. 'grad_momentum_cos' -> 'cos(gradient, momentum)'."""
    return _METRICS.get(str(metric), str(metric).replace("_", " "))


def panel_label(panel: object) -> str:
    """Readable name of a hyper-parameter panel, e.g. 'beta2_p' -> 'β2 → β2^p, β1 kept (p < 1: larger β2, ...)'.

    β^p with p < 1 is a LARGER β (β in (0, 1)): a longer memory, the half-life in steps 1/p times longer.
    """
    return _PANELS.get(str(panel), str(panel).replace("_", " "))


_PANEL_AXES: dict[str, str] = {
    "betas_p": "p (β1, β2 → β^p; p < 1: larger)",
    "beta2_p": "p (β2 → β2^p; p < 1: larger)",
    "batch_x": "k (batch size × k)",
    "batch_x_half_life": "k (batch size × k)",
    "weight_decay_off": "weight decay off (0: no, 1: yes)",
    "reset_optimizer": "optimizer reset (0: no, 1: yes)",
}


def panel_axis_label(panel: object) -> str:
    """x-axis label of a hyper-parameter panel, e.g. 'beta2_p' -> 'p (β2 → β2^p; p < 1: larger)'."""
    return _PANEL_AXES.get(str(panel), f"value ({panel})")


def color_map(names: Iterable[object]) -> dict[object, str]:
    """Colours for a set of names (e.g. runs): known names keep theirs, the others take unused palette
    colours in sorted order, so the same set of names gets the same colours in every figure."""
    unique = list(dict.fromkeys(names))
    out = {n: group_color(n) for n in unique if str(n) in KNOWN_ORDER}
    free = [c for c in (*PALETTE, *EXTRA_PALETTE) if c not in out.values()]
    for i, n in enumerate(sorted((n for n in unique if n not in out), key=str)):
        out[n] = free[i % len(free)]
    return out
