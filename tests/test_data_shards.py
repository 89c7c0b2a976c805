"""Corpus preparation: document split without leaks, packing, caching, concurrent preparers."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from wsdlab.data import shards
from wsdlab.data.config import DataConfig
from wsdlab.data.shards import (
    corpus_dir,
    pack_sequences,
    prepare_corpus,
    read_meta,
    split_budgets,
    split_documents,
    token_dtype,
)

NUM_DOCS, VAL_FRACTION, SPLIT_SEED = 30, 0.2, 3
WORDS = "alpha beta gamma delta epsilon zeta theta iota kappa lambda".split()


def marker(i: int) -> str:
    return f"DOC{i:03d}X"


def write_corpus(directory: Path) -> Path:
    """30 JSONL documents, each with a unique marker; the val ones (known in advance) also hold '§'."""
    _, val = split_documents(NUM_DOCS, VAL_FRACTION, SPLIT_SEED)
    lines = []
    for i in range(NUM_DOCS):
        body = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40 + i))
        extra = " §§" if i in set(val.tolist()) else ""
        lines.append(json.dumps({"text": f"{marker(i)} {body}{extra}\n"}))
    path = directory / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def tiny(corpus_file: Path, cache: Path, **overrides: object) -> DataConfig:
    fields = dict(source="jsonl", path=str(corpus_file), vocab_size=300, seq_len=16, val_fraction=VAL_FRACTION,
                  split_seed=SPLIT_SEED, cache_dir=str(cache))
    fields.update(overrides)
    return DataConfig(**fields)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_split_documents_disjoint_seeded_and_nonempty() -> None:
    train, val = split_documents(50, 0.1, 0)
    assert len(val) == 5 and len(train) == 45
    assert set(train.tolist()).isdisjoint(val.tolist()) and set(train.tolist()) | set(val.tolist()) == set(range(50))
    again = split_documents(50, 0.1, 0)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, split_documents(50, 0.1, 1)[1])
    assert [len(s) for s in split_documents(3, 0.01, 0)] == [2, 1]
    with pytest.raises(ValueError, match="at least 2 documents"):
        split_documents(1, 0.5, 0)


def test_pack_sequences_by_hand() -> None:
    docs = [np.array([1, 2, 3]), np.array([4]), np.array([5, 6])]
    # stream: 1 2 3 S 4 S 5 6 S (S = 9), rows of seq_len + 1 = 4, remainder dropped
    got = pack_sequences(docs, 3, 9, np.dtype(np.uint16))
    assert got.tolist() == [[1, 2, 3, 9], [4, 9, 5, 6]] and got.dtype == np.uint16


def test_split_budgets() -> None:
    assert split_budgets(None, 0.1) == (None, None)
    assert split_budgets(1000, 0.05) == (950, 50)
    assert split_budgets(10, 0.01) == (9, 1)


def test_token_dtype() -> None:
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_prepare_shapes_dtype_and_meta(corpus_file: Path, cache: Path) -> None:
    cfg = tiny(corpus_file, cache)
    directory = prepare_corpus(cfg, progress=False)
    assert directory == corpus_dir(cfg) and directory.parent == cache
    meta = read_meta(directory)
    train = np.load(directory / "train.npy", mmap_mode="r")
    val = np.load(directory / "val.npy", mmap_mode="r")
    assert train.shape == (meta["num_train"], 17) and val.shape == (meta["num_val"], 17)
    assert train.dtype == np.uint16 and isinstance(train, np.memmap)
    assert meta["train_documents"] == 24 and meta["val_documents"] == 6
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    assert meta["vocab_size"] == tok.get_vocab_size() and int(train.max()) < meta["vocab_size"]
    # every token kept: rows hold floor((tokens + one separator per doc) / 17) rows
    assert meta["num_train"] == (meta["train_tokens"] + 24) // 17
    assert meta["name"] == directory.name
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_split_by_document_never_leaks(corpus_file: Path, cache: Path) -> None:
    directory = prepare_corpus(tiny(corpus_file, cache), progress=False)
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    text = {s: tok.decode(np.load(directory / f"{s}.npy").reshape(-1).tolist()) for s in ("train", "val")}
    train_ids, val_ids = split_documents(NUM_DOCS, VAL_FRACTION, SPLIT_SEED)
    for i in val_ids.tolist():
        assert marker(i) not in text["train"]
    for i in train_ids.tolist():
        assert marker(i) not in text["val"]
    found = sum(marker(i) in text["train"] for i in train_ids.tolist()) + sum(marker(i) in text["val"] for i in val_ids.tolist())
    assert found >= NUM_DOCS - 2  # at most the last document of each split falls in the dropped remainder
    assert "§" not in text["train"] and "§" in text["val"]


def test_char_tokenizer_is_trained_on_train_documents_only(corpus_file: Path, cache: Path) -> None:
    directory = prepare_corpus(tiny(corpus_file, cache, tokenizer="char", vocab_size=64), progress=False)
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    assert tok.token_to_id("§") is None and tok.token_to_id("a") is not None  # '§' occurs in val docs only
    assert read_meta(directory)["vocab_size"] == tok.get_vocab_size() <= 64


def test_second_call_reuses_without_work(corpus_file: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny(corpus_file, cache)
    directory = prepare_corpus(cfg, progress=False)
    stamp = (directory / "meta.json").stat().st_mtime_ns

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("corpus was prepared again")

    monkeypatch.setattr(shards, "iter_documents", no_work)
    assert prepare_corpus(cfg, progress=False) == directory
    assert (directory / "meta.json").stat().st_mtime_ns == stamp


def test_directory_depends_only_on_token_fields(corpus_file: Path, cache: Path) -> None:
    base = tiny(corpus_file, cache)
    assert corpus_dir(base) == corpus_dir(tiny(corpus_file, cache, order={"seed": 5}, streaming=True))
    assert corpus_dir(base) != corpus_dir(tiny(corpus_file, cache, seq_len=8))
    assert corpus_dir(base) != corpus_dir(tiny(corpus_file, cache, split_seed=4))
    assert corpus_dir(base).name.startswith("corpus-bpe300-seq16-")


def test_max_tokens_caps_document_tokens(corpus_file: Path, cache: Path) -> None:
    meta = read_meta(prepare_corpus(tiny(corpus_file, cache, max_tokens=400), progress=False))
    assert (meta["train_tokens"], meta["val_tokens"]) == (320, 80)  # val's share: 400 * 0.2
    assert meta["train_documents"] + meta["val_documents"] < NUM_DOCS


def test_too_small_corpus_is_a_clear_error(corpus_file: Path, cache: Path) -> None:
    with pytest.raises(ValueError, match="seq_len"):
        prepare_corpus(tiny(corpus_file, cache, seq_len=4000), progress=False)
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_losing_a_race_keeps_the_winner(corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another preparer publishes while we build (no lock shared): ours is discarded, theirs kept."""
    cfg = tiny(corpus_file, tmp_path)
    final = corpus_dir(cfg)
    real_build = shards._build

    def build_and_get_overtaken(cfg: DataConfig, out: Path, name: str, progress: bool) -> dict:
        meta = real_build(cfg, out, name, progress)
        shutil.copytree(out, final)
        (final / "winner").write_text("theirs")
        return meta

    monkeypatch.setattr(shards, "_build", build_and_get_overtaken)
    assert prepare_corpus(cfg, progress=False) == final
    assert (final / "winner").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [final.name]


def _prepare_after_barrier(cfg_json: str, barrier: object, results: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]  # both processes start preparing together
    results.put(str(prepare_corpus(DataConfig.model_validate_json(cfg_json), progress=False)))  # type: ignore[attr-defined]


def test_concurrent_preparers_agree(corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes prepare the same corpus at once: one directory, no leftovers, both get it."""
    cfg = tiny(corpus_file, tmp_path, seq_len=12)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # forked children: no rayon pool
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare_after_barrier, args=(cfg.model_dump_json(), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1] == str(corpus_dir(cfg))
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [Path(results[0]).name]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    meta = read_meta(results[0])
    assert np.load(Path(results[0]) / "train.npy").shape == (meta["num_train"], 13)


def test_pretrained_tokenizer_and_hf_source(corpus_file: Path, cache: Path, tmp_path: Path) -> None:
    """A local tokenizer.json and the hf path (local json builder) prepare like any other corpus."""
    trained = prepare_corpus(tiny(corpus_file, cache), progress=False)
    cfg = tiny(corpus_file, cache, source="hf", hf_name="json", tokenizer="pretrained",
               tokenizer_path=str(trained / "tokenizer.json"))
    directory = prepare_corpus(cfg, progress=False)
    assert directory != trained and directory.name.startswith("json-corpus-pretrained-seq16-")
    same_docs = read_meta(trained)
    meta = read_meta(directory)
    assert meta["vocab_size"] == same_docs["vocab_size"]
    assert (meta["train_tokens"], meta["val_tokens"]) == (same_docs["train_tokens"], same_docs["val_tokens"])
    assert np.array_equal(np.load(directory / "train.npy"), np.load(trained / "train.npy"))
