"""Streaming preparation: the row writer equals packing in memory, documents round-trip through the
spool, memory is bounded by a chunk (not the corpus), and the Hugging Face path streams the same tokens."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from wsdlab.data import shards
from wsdlab.data.bundle import prepared_marker
from wsdlab.data.config import DataConfig
from wsdlab.data.shards import (
    DocumentStore,
    RowWriter,
    pack_sequences,
    prepare_corpus,
    prepared_meta,
    read_meta,
    tokenize_documents,
    write_split,
)
from wsdlab.data.tokenizer import train_char


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_row_writer_matches_packing_by_hand(tmp_path: Path, chunk_rows: int) -> None:
    # stream: 1 2 3 S 4 S 5 6 7 8 9 S 10 S (S = 0), rows of 4 tokens, the last 2 tokens dropped
    docs = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [10]]
    writer = RowWriter(tmp_path / "x.npy", 4, 0, np.dtype(np.uint16), chunk_rows)
    for d in docs:
        writer.add(np.array(d))
    assert writer.close() == 3 and writer.tokens == 14
    expected = [[1, 2, 3, 0], [4, 0, 5, 6], [7, 8, 9, 0]]
    got = np.load(tmp_path / "x.npy")
    assert got.tolist() == expected and got.dtype == np.uint16
    # byte for byte what the in-memory packing wrote through np.save / open_memmap before
    reference = pack_sequences([np.array(d) for d in docs], 3, 0, np.dtype(np.uint16))
    assert (tmp_path / "x.npy").read_bytes() == npy_bytes(reference)


def test_row_writer_without_a_whole_row(tmp_path: Path) -> None:
    writer = RowWriter(tmp_path / "x.npy", 8, 0, np.dtype(np.uint32), 1)
    writer.add(np.array([1, 2]))
    assert writer.close() == 0
    assert np.load(tmp_path / "x.npy").shape == (0, 8)


@pytest.mark.parametrize("budget", [None, 1, 57, 300, 10_000])
@pytest.mark.parametrize("chunk_tokens", [1, 20, 1 << 20])
def test_write_split_equals_the_in_memory_path(tmp_path: Path, budget: int | None, chunk_tokens: int) -> None:
    """Streaming a split gives the bytes and counts of tokenizing every document, then packing (the former
    path), with a token budget that truncates a document and with chunks smaller than a row."""
    docs = [f"doc {i}: " + "abcdefgh"[: 1 + i % 8] * (1 + i % 5) for i in range(60)]
    tok = train_char(docs, 20)
    dtype = np.dtype(np.uint16)
    counts = write_split(tok, iter(docs), len(docs), tmp_path / "s.npy", 9, 1, dtype, budget, chunk_tokens)
    arrays = tokenize_documents(tok, docs, dtype, budget)
    reference = pack_sequences(arrays, 9, 1, dtype)
    assert (tmp_path / "s.npy").read_bytes() == npy_bytes(reference)
    assert counts == {"documents": len(arrays), "tokens": sum(len(a) for a in arrays), "rows": len(reference),
                      "stream": sum(len(a) + 1 for a in arrays)}
    if budget is not None and budget < 300:
        assert counts["tokens"] == budget and counts["documents"] < len(docs)


def test_document_store_round_trips_in_any_order(tmp_path: Path) -> None:
    docs = ["plain", "ünïcödé ✓", "lone \ud800 surrogate", "x" * 5000, "last"]
    store = DocumentStore(tmp_path / "docs.bin", iter(docs))
    try:
        assert len(store) == 5
        order = np.array([4, 2, 0, 3, 1])
        assert list(store.iterate(order)) == [docs[i] for i in order]
    finally:
        store.close()
    assert not (tmp_path / "docs.bin").exists()


def word_tokenizer(path: Path, vocab: int) -> Path:
    words = {"<|endoftext|>": 0, "<unk>": 1, **{f"w{i}": i + 2 for i in range(vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


def write_words_corpus(path: Path, num_docs: int, words_per_doc: int, vocab: int) -> None:
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        for _ in range(num_docs):
            f.write(json.dumps({"text": " ".join(f"w{i}" for i in rng.integers(0, vocab, words_per_doc))}) + "\n")


def test_peak_memory_is_bounded_by_a_chunk_not_the_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """About 8 MB of text (1.3M tokens, a 2.6 MB uint16 token array) prepared with small chunks and
    encode batches: Python's peak allocation stays under a quarter of the token array (holding the
    documents and their tokens, as before, peaked at about 5x it: 34 MB for a 6.4 MB array)."""
    vocab = 5000
    tok = word_tokenizer(tmp_path / "tok.json", vocab)
    write_words_corpus(tmp_path / "warm.jsonl", 300, 200, vocab)
    write_words_corpus(tmp_path / "c.jsonl", 6500, 200, vocab)
    monkeypatch.setattr(shards, "CHUNK_TOKENS", 1 << 14)
    monkeypatch.setattr(shards, "ENCODE_BATCH", 32)
    configs = [DataConfig(source="jsonl", path=str(tmp_path / name), tokenizer="pretrained", tokenizer_path=str(tok),
                          seq_len=127, cache_dir=str(tmp_path / "cache")) for name in ("warm.jsonl", "c.jsonl")]
    prepare_corpus(configs[0], progress=False)  # lazy imports and first-use caches are not the corpus's
    tracemalloc.start()
    try:
        directory = prepare_corpus(configs[1], progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    meta = read_meta(directory)
    token_array = (meta["num_train"] + meta["num_val"]) * 128 * 2
    assert meta["train_tokens"] + meta["val_tokens"] == 6500 * 200 and meta["dtype"] == "uint16"
    assert peak < token_array / 4, (peak, token_array)
    assert not (directory / shards.DOCUMENTS_FILE).exists()


def test_hf_streaming_path_gives_the_tokens_of_the_same_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed Hugging Face dataset (here a local IterableDataset) packs to the same bytes as a JSONL
    file holding the same documents; planning-side `prepared_meta` finds it without preparing."""
    datasets = pytest.importorskip("datasets")
    texts = [f"document {i} " + "lorem ipsum dolor sit amet " * (3 + i % 7) for i in range(40)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    calls: list[tuple] = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config, kwargs))
        return datasets.Dataset.from_dict({"text": texts}).to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    common = dict(vocab_size=300, seq_len=16, val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    hf = DataConfig(source="hf", hf_name="someone/corpus", streaming=True, **common)
    local = DataConfig(source="jsonl", path=str(tmp_path / "c.jsonl"), **common)
    assert prepared_meta(hf) is None and not prepared_marker(hf).exists()
    a, b = prepare_corpus(hf, progress=False), prepare_corpus(local, progress=False)
    assert calls == [("someone/corpus", None, {"split": "train", "streaming": True})]
    assert a != b
    for name in ("train.npy", "val.npy", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert prepared_meta(hf)["num_train"] == read_meta(a)["num_train"] > 0
    assert prepared_marker(hf) == a / shards.META_FILE and prepared_marker(hf).is_file()


def test_prepared_marker_is_none_without_a_corpus() -> None:
    assert prepared_marker(DataConfig(source="cifar10")) is None
