"""Model configs: one small pydantic model per family, told apart by `arch`.

`LlamaConfig` (arch "llama") and `NeoXConfig` (arch "neox") share the language-model fields of
`LMConfig`; `CNNConfig` (arch "cnn") has only image fields. Every field is read by the model it
configures: a field given to the wrong family (`bias` on a Llama, `vocab_size` on the CNN) is an
error naming it. `ModelConfig` is the tagged union that specs hold (`model: {arch: llama, ...}`);
`arch` defaults to "llama" when a mapping leaves it out.

Language models take token ids (B, T) and return logits (B, T, vocab_size); the CNN takes images
(B, C, H, W) and returns logits (B, num_classes). `preset` names where the numbers came from
(informational, ignored when two configs are compared).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator, model_validator
from pydantic_core import PydanticCustomError

from wsdlab.common.config import StrictModel

Arch = Literal["llama", "neox", "cnn"]
DEFAULT_ARCH: Arch = "llama"


class LMConfig(StrictModel):
    """Fields every decoder-only language model reads (the base of LlamaConfig and NeoXConfig)."""

    model_config = ConfigDict(allow_inf_nan=False)  # NaN / inf numbers are rejected

    arch: Literal["llama", "neox"]
    preset: str | None = None
    vocab_size: int = Field(50304, gt=0)
    seq_len: int = Field(512, gt=0, description="Context length (max positions for RoPE tables).")
    d_model: int = Field(512, gt=0)
    n_layers: int = Field(10, gt=0)
    n_heads: int = Field(8, gt=0)
    head_dim: int | None = Field(None, gt=0, description="None = d_model // n_heads.")
    ffn_dim: int = Field(1536, gt=0)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False

    @property
    def attn_head_dim(self) -> int:
        """Channels per attention head: head_dim, else d_model // n_heads."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads; equal to n_heads unless the family has grouped-query attention."""
        return self.n_heads

    @property
    def rot_dim(self) -> int:
        """Rotated channels per head (RoPE): the whole head, rounded down to even."""
        return self.attn_head_dim // 2 * 2

    @model_validator(mode="after")
    def _check_lm_shapes(self) -> "LMConfig":
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) when head_dim is not set")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.kv_heads})")
        if self.rot_dim < 2:
            if isinstance(self, NeoXConfig):
                raise ValueError(f"rotary_pct ({self.rotary_pct}) rotates fewer than 2 of {self.attn_head_dim} head channels")
            raise ValueError(f"head dim ({self.attn_head_dim}) must be at least 2 (RoPE rotates pairs of channels)")
        return self


class LlamaConfig(LMConfig):
    """Llama (Meta): RMSNorm, SwiGLU, RoPE on the whole head, grouped-query attention, no biases."""

    arch: Literal["llama"] = "llama"
    n_kv_heads: int | None = Field(None, gt=0, description="Grouped-query attention; None = n_heads.")

    @property
    def kv_heads(self) -> int:
        """Key/value heads (grouped-query attention); n_heads when n_kv_heads is not set."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads


class NeoXConfig(LMConfig):
    """GPT-NeoX / Pythia: LayerNorm, GELU MLP, partial rotary, multi-head attention."""

    arch: Literal["neox"] = "neox"
    rotary_pct: float = Field(1.0, gt=0.0, le=1.0, description="Fraction of each head's channels rotated (Pythia: 0.25).")
    parallel_residual: bool = Field(True, description="Attention and MLP read the same input and add in parallel.")
    bias: bool = Field(True, description="Biases in the linear layers.")

    @property
    def rot_dim(self) -> int:
        """Rotated channels per head: int(head_dim * rotary_pct) rounded down to even (GPT-NeoX)."""
        return int(self.attn_head_dim * self.rotary_pct) // 2 * 2


class CNNConfig(StrictModel):
    """The universality study's CNN: 3x3 conv stages of widths `channels`, then a linear classifier."""

    model_config = ConfigDict(allow_inf_nan=False)  # NaN / inf numbers are rejected

    arch: Literal["cnn"] = "cnn"
    preset: str | None = None
    in_channels: int = Field(3, gt=0)
    image_size: int = Field(32, gt=0, description="Side of the square input images (FLOP count only).")
    num_classes: int = Field(10, gt=0)
    channels: list[int] = Field(default_factory=lambda: [32, 128, 128, 128], min_length=1)

    @model_validator(mode="after")
    def _check_side(self) -> "CNNConfig":
        # every stage halves the side (a 2x2 max-pool after each convolution, paper 001 App. A)
        if self.image_size < 2 ** len(self.channels):
            raise ValueError(f"image_size {self.image_size} is too small for {len(self.channels)} conv + 2x2-pool "
                             f"stages (needs >= {2 ** len(self.channels)})")
        return self


# The fields of the single ModelConfig that every family shared before the split; a spec.yaml
# written then holds all of them. Reading one, the fields its model ignored are dropped.
_LEGACY_FIELDS = frozenset({
    "arch", "preset", "vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
    "ffn_dim", "rope_theta", "norm_eps", "tie_embeddings", "rotary_pct", "parallel_residual", "bias",
    "in_channels", "image_size", "num_classes", "channels",
})
_FAMILIES: dict[str, type[StrictModel]] = {"llama": LlamaConfig, "neox": NeoXConfig, "cnn": CNNConfig}


def _upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A full dump of the old single ModelConfig, less the fields its family never read.

    Values the old model did read are kept (then rejected by name): a Llama's rotary_pct other than
    1, a NeoX's n_kv_heads other than None / n_heads.
    """
    family = _FAMILIES.get(data.get("arch"))  # type: ignore[arg-type]
    if family is None or not _LEGACY_FIELDS <= data.keys():
        return data
    out = {k: v for k, v in data.items() if k in family.model_fields or k not in _LEGACY_FIELDS}
    if data["arch"] == "llama" and data["rotary_pct"] != 1.0:
        out["rotary_pct"] = data["rotary_pct"]
    if data["arch"] == "neox" and data["n_kv_heads"] not in (None, data["n_heads"]):
        out["n_kv_heads"] = data["n_kv_heads"]
    return out


def _validate_model(data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Default `arch`, upgrade old full dumps, and report errors at `model.<field>` (not `model.<arch>.<field>`)."""
    if isinstance(data, dict):
        data = _upgrade_legacy({"arch": DEFAULT_ARCH, **data})
    try:
        return handler(data)
    except ValidationError as err:
        tag = data.get("arch") if isinstance(data, dict) else None
        details: list[Any] = []
        for e in err.errors():
            loc = e["loc"]
            if loc[:1] == (tag,):
                loc = loc[1:]  # the union's tag, which pydantic puts in front of the field
            elif e["type"] == "union_tag_invalid":
                loc = ("arch", *loc)
            kind: Any = e["type"]
            owners = [a for a, family in _FAMILIES.items() if a != tag and loc[-1:] and loc[-1] in family.model_fields]
            if kind == "extra_forbidden" and len(loc) == 1 and owners:
                kind = PydanticCustomError(
                    "extra_forbidden", "not a field of arch '{arch}' (only of {owners})", {"arch": tag, "owners": ", ".join(owners)})
            details.append({"type": kind, "loc": loc, "input": e["input"], **({"ctx": e["ctx"]} if "ctx" in e else {})})
        raise ValidationError.from_exception_data(err.title, details) from None


ModelConfig = Annotated[
    Union[LlamaConfig, NeoXConfig, CNNConfig],
    Field(discriminator="arch"),
    WrapValidator(_validate_model),
]
"""Any model's config, chosen by `arch` ("llama" when left out)."""
