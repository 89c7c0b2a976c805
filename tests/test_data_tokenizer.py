"""Tokenizers: byte-level BPE round trip, char vocabulary, pretrained loading, separator lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from wsdlab.data.config import DataConfig
from wsdlab.data.tokenizer import (
    END_OF_TEXT,
    UNKNOWN,
    build_tokenizer,
    char_vocabulary,
    separator_id,
    train_bpe,
    train_char,
)

TRAIN = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "# comment with ünïcode and emoji 🐍\nprint('hello world')\n",
] * 4


def test_bpe_round_trips_any_text() -> None:
    tok = train_bpe(TRAIN, 300)
    assert tok.get_vocab_size() <= 300
    for text in ["def add(a, b):\n\treturn  a+b", "never seen: Ωμέγα ✓ 🐍\r\n", "   leading spaces"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text


def test_bpe_learns_merges_and_separator_is_special() -> None:
    tok = train_bpe(TRAIN, 320)
    assert separator_id(tok) == tok.token_to_id(END_OF_TEXT) == 0
    assert len(tok.encode("def add(a, b):", add_special_tokens=False).ids) < len("def add(a, b):")
    sep_ids = tok.encode(END_OF_TEXT, add_special_tokens=False).ids
    assert sep_ids == [0]


def test_bpe_training_is_deterministic() -> None:
    assert train_bpe(TRAIN, 300).to_str() == train_bpe(TRAIN, 300).to_str()


def test_bpe_vocab_too_small() -> None:
    with pytest.raises(ValueError, match="data.vocab_size"):
        train_bpe(TRAIN, 100)


def test_char_vocabulary_by_frequency_then_code_point() -> None:
    # counts: a=4, b=2, c=2, d=1 -> a, then b/c tie broken by code point, then d
    assert char_vocabulary(["aab", "acca", "bd"], 6) == ["a", "b", "c", "d"]
    assert char_vocabulary(["aab", "acca", "bd"], 4) == ["a", "b"]


def test_char_tokenizer_round_trip_and_unknown() -> None:
    tok = train_char(["hello world\n", "held\twell"], 12)
    assert tok.get_vocab_size() == 12
    assert tok.token_to_id(UNKNOWN) == 0 and separator_id(tok) == 1
    text = "hello\nworld"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.encode("hq", add_special_tokens=False).ids[1] == 0  # 'q' unseen -> <unk>


def test_pretrained_loads_local_file_and_needs_path(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    train_bpe(TRAIN, 300).save(str(path))
    cfg = DataConfig(tokenizer="pretrained", tokenizer_path=str(path))
    tok = build_tokenizer(cfg, [])
    assert tok.decode(tok.encode("def f(): pass", add_special_tokens=False).ids) == "def f(): pass"
    missing = DataConfig(tokenizer="pretrained", tokenizer_path=str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match="data.tokenizer_path"):
        build_tokenizer(missing, [])


@pytest.mark.parametrize("content", [b"not json at all\n", b"\x00\xff\xfe\x89PNG binary", b'{"version": "1.0"}'])
def test_pretrained_file_that_is_not_a_tokenizer_is_a_config_error_naming_it(tmp_path: Path, content: bytes) -> None:
    from wsdlab.common.errors import ConfigError

    path = tmp_path / "tokenizer.json"
    path.write_bytes(content)
    cfg = DataConfig(tokenizer="pretrained", tokenizer_path=str(path))
    with pytest.raises(ConfigError, match=r"data\.tokenizer_path: .*tokenizer\.json: not a tokenizer\.json file"):
        build_tokenizer(cfg, [])


def test_separator_lookup_alternatives_and_error() -> None:
    llama_like = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "<|end_of_text|>": 2}, unk_token="<unk>"))
    assert separator_id(llama_like) == 2
    bare = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    with pytest.raises(ValueError, match="no end-of-text token"):
        separator_id(bare, "data.tokenizer_path")
