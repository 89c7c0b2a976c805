"""Tokenizers, all as `tokenizers.Tokenizer` saved to one tokenizer.json.

- `bpe`: byte-level BPE (GPT-2 style ByteLevel pre-tokenizer and decoder) trained on the train
  documents, with `<|endoftext|>` as its first special token (the document separator).
- `char`: the `vocab_size - 2` most frequent characters of the train documents plus `<unk>` and
  `<|endoftext|>` (for the `micro` model); a WordLevel model over single characters, fused on decode.
- `pretrained`: a local tokenizer.json (GPT-2, Llama-3, ...), whose end-of-text token separates documents.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from wsdlab.common.errors import ConfigError
from wsdlab.data.config import DataConfig

END_OF_TEXT = "<|endoftext|>"
UNKNOWN = "<unk>"
# End-of-document tokens of common pretrained tokenizers, tried in this order.
EOT_CANDIDATES = (END_OF_TEXT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")
MIN_BPE_VOCAB = 257  # 256 byte symbols + the separator
MIN_CHAR_VOCAB = 3  # <unk>, separator, one character


def train_bpe(documents: Iterable[str], vocab_size: int, progress: bool = False) -> Tokenizer:
    """Byte-level BPE with `vocab_size` entries (fewer if the corpus runs out of merges)."""
    if vocab_size < MIN_BPE_VOCAB:
        raise ConfigError(f"data.vocab_size: a byte-level BPE needs at least {MIN_BPE_VOCAB}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tok.train_from_iterator(documents, trainer=trainer)
    return tok


def char_vocabulary(documents: Iterable[str], vocab_size: int) -> list[str]:
    """The `vocab_size - 2` most frequent characters, ties broken by code point (deterministic)."""
    counts: Counter[str] = Counter()
    for doc in documents:
        counts.update(doc)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [ch for ch, _ in ranked[: vocab_size - 2]]


def char_tokenizer(chars: Sequence[str]) -> Tokenizer:
    """WordLevel tokenizer over single characters: ids 0 = `<unk>`, 1 = separator, then `chars`."""
    vocab = {UNKNOWN: 0, END_OF_TEXT: 1}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([UNKNOWN, END_OF_TEXT])
    return tok


def train_char(documents: Iterable[str], vocab_size: int) -> Tokenizer:
    """Character tokenizer of size at most `vocab_size` over the train documents."""
    if vocab_size < MIN_CHAR_VOCAB:
        raise ConfigError(f"data.vocab_size: a char tokenizer needs at least {MIN_CHAR_VOCAB}, got {vocab_size}")
    return char_tokenizer(char_vocabulary(documents, vocab_size))


def load_pretrained(path: str) -> Tokenizer:
    """A local tokenizer.json; FileNotFoundError naming `data.tokenizer_path` when it is missing, ConfigError
    naming it when it is not a tokenizers JSON file (the tokenizers library raises a bare Exception)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"data.tokenizer_path: {p} not found (give a local tokenizer.json, e.g. GPT-2's or Llama-3's)"
        )
    try:
        return Tokenizer.from_file(str(p))
    except Exception as err:  # not JSON, binary, or JSON of another layout
        raise ConfigError(f"data.tokenizer_path: {p}: not a tokenizer.json file ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200] if str(err) else 'unreadable'})") from None


def separator_id(tok: Tokenizer, where: str = "tokenizer") -> int:
    """Id of the end-of-text token that separates documents."""
    for name in EOT_CANDIDATES:
        idx = tok.token_to_id(name)
        if idx is not None:
            return idx
    raise ConfigError(f"{where}: no end-of-text token found (tried {', '.join(EOT_CANDIDATES)})")


def build_tokenizer(cfg: DataConfig, train_documents: Iterable[str], progress: bool = False) -> Tokenizer:
    """The tokenizer `cfg.tokenizer` asks for, trained on the train documents where it is trained.

    `train_documents` is read once, as a stream (a list or a generator give the same tokenizer), and
    not at all for a pretrained tokenizer.
    """
    if cfg.tokenizer == "bpe":
        return train_bpe(train_documents, cfg.vocab_size, progress=progress)
    if cfg.tokenizer == "char":
        return train_char(train_documents, cfg.vocab_size)
    return load_pretrained(cfg.tokenizer_path or "")
