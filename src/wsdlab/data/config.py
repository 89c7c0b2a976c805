"""Data config: where text comes from, how it is tokenized and packed, and in which order it is read."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from wsdlab.common.config import StrictModel

SourceKind = Literal["stdlib", "text", "jsonl", "parquet", "hf", "fashion_mnist", "cifar10"]
TokenizerKind = Literal["bpe", "char", "pretrained"]


class OrderConfig(StrictModel):
    """Which training sequences a run reads, and in which order.

    The training sequences are split into `num_portions` contiguous, disjoint portions; a run reads
    portion `portion`, in a permutation drawn from `seed`, re-permuted (seed, epoch) whenever it is
    exhausted (repetition to a longer run). The order is a pure function of this config, so the
    data cursor (sequences consumed) fully determines the position.
    """

    seed: int = Field(0, le=2**64 - 1, description="Order seed, 0 .. 2**64-1 (negative: rejected by the run checks).")
    portion: int = Field(0, ge=0)
    num_portions: int = Field(1, ge=1)
    shuffle: bool = True

    @model_validator(mode="after")
    def _check_portion(self) -> "OrderConfig":
        if self.portion >= self.num_portions:
            raise ValueError(f"portion {self.portion} must be < num_portions {self.num_portions}")
        return self


class SFTDataConfig(StrictModel):
    """Prompt/response pairs for supervised fine-tuning, tokenized with the corpus's tokenizer (WSO paper,
    App. D: "Since the official dataset does not provide a predefined train-validation split, we create our
    own using a 9:1 ratio for training and validation").

    source `stdlib`: the embedded offline instruction set, built from the functions of the corpus's held-out
    (validation) modules, so pre-training never read its answers: docstring -> function, function -> docstring.
    source `hf`: a Hugging Face chat dataset by name (e.g. allenai/tulu-3-sft-mixture), its `messages_field`
    a list of {role, content}; the first user turn is the prompt and the next assistant turn the response.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    source: Literal["stdlib", "hf"] = "stdlib"
    hf_name: str | None = Field(None, description="Dataset name, e.g. allenai/tulu-3-sft-mixture, or a local builder "
                                "(json, parquet) reading `path`.")
    hf_config: str | None = None
    hf_split: str = "train"
    path: str | None = Field(None, description="Local data files of a builder hf_name (json/parquet).")
    messages_field: str = "messages"
    max_examples: int | None = Field(None, gt=0, description="At most this many pairs (before the split).")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of pairs held out for validation (9:1).")
    seed: int = Field(0, ge=0, le=2**64 - 1, description="Seed of the train/validation split.")

    @model_validator(mode="after")
    def _check(self) -> "SFTDataConfig":
        if self.source == "hf" and not self.hf_name:
            raise ValueError("sft source 'hf' needs hf_name")
        return self


class DataConfig(StrictModel):
    """A corpus: source -> documents -> tokenizer -> packed sequences of seq_len + 1 tokens."""

    model_config = ConfigDict(allow_inf_nan=False)

    source: SourceKind = "stdlib"
    path: str | None = Field(None, description="Local file or directory (text/jsonl/parquet).")
    hf_name: str | None = Field(None, description="Hugging Face dataset name, e.g. HuggingFaceFW/fineweb-edu.")
    hf_config: str | None = None
    hf_split: str = "train"
    streaming: bool = False
    text_field: str = "text"
    max_documents: int | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0, description="Stop tokenizing after this many tokens.")
    tokenizer: TokenizerKind = "bpe"
    tokenizer_path: str | None = Field(None, description="tokenizer.json of a pretrained tokenizer (pretrained).")
    vocab_size: int = Field(4096, gt=0, description="Vocabulary of a trained tokenizer (bpe/char).")
    seq_len: int = Field(128, gt=0)
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="Share of documents held out (split by document).")
    split_seed: int = Field(0, ge=0, le=2**64 - 1)
    cache_dir: str | None = Field(None, description="Default: $WSDLAB_CACHE or ~/.cache/wsdlab.")
    order: OrderConfig = Field(default_factory=OrderConfig)
    sft: SFTDataConfig | None = Field(None, description="Read prompt/response pairs (loss on responses) instead "
                                      "of the packed corpus; the corpus above gives the tokenizer.")

    @model_validator(mode="after")
    def _check_source(self) -> "DataConfig":
        if self.source in ("text", "jsonl", "parquet") and not self.path:
            raise ValueError(f"source '{self.source}' needs path")
        if self.source == "hf" and not self.hf_name:
            raise ValueError("source 'hf' needs hf_name")
        if self.tokenizer == "pretrained" and not self.tokenizer_path:
            raise ValueError("tokenizer 'pretrained' needs tokenizer_path (a local tokenizer.json)")
        if self.sft is not None and self.is_vision:
            raise ValueError(f"sft data needs a text corpus (its tokenizer), not '{self.source}'")
        return self

    @property
    def is_vision(self) -> bool:
        return self.source in ("fashion_mnist", "cifar10")
