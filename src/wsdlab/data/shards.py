"""Prepare a text corpus once: documents -> train/val split -> tokenizer -> packed token shards on disk.

Layout of `cache_dir/<slug>-<hash>/` (hash of the fields that affect the tokens, see `corpus_fields`):
    tokenizer.json   the tokenizer (trained on the train documents only, for bpe/char)
    train.npy        (num_train, seq_len + 1) uint16/uint32, read as a memmap
    val.npy          (num_val, seq_len + 1)
    meta.json        counts, vocabulary size, separator id, the hashed fields; written last
Documents are split by document (never across splits), each split shuffled by `split_seed`, joined
as `doc <sep> doc <sep> ...` and cut into non-overlapping windows of seq_len + 1 tokens (the
remainder is dropped). `max_tokens` caps the document tokens (separators not counted): val keeps
round(max_tokens * val_fraction) of them and train the rest, each taking its documents in shuffled
order and truncating the last one kept. The directory is built under a `.tmp-` name and renamed
into place under a file lock, so concurrent preparers neither corrupt it nor repeat the work; a
second call reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tokenizers import Tokenizer

from wsdlab.common.errors import ConfigError
from wsdlab.common.hashing import spec_hash
from wsdlab.common.io import atomic_directory, default_cache_dir
from wsdlab.data.config import DataConfig
from wsdlab.data.sources import iter_documents, source_fingerprint
from wsdlab.data.tokenizer import build_tokenizer, separator_id

FORMAT_VERSION = 1
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")
ENCODE_BATCH = 256


class _AlreadyPrepared(Exception):
    """Raised inside the build to discard our copy when another process published first."""


def cache_root(cfg: DataConfig) -> Path:
    """`cfg.cache_dir`, else $WSDLAB_CACHE, else ~/.cache/wsdlab."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


def _file_digest(path: str) -> str:
    """Short sha256 of a file's bytes (a pretrained tokenizer's identity)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"data.tokenizer_path: {p} not found")
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def corpus_fields(cfg: DataConfig) -> dict[str, Any]:
    """The fields that determine the tokens (hashed into the directory name); not order/cache/streaming."""
    fields: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "source": cfg.source,
        "text_field": cfg.text_field,
        "max_documents": cfg.max_documents,
        "max_tokens": cfg.max_tokens,
        "tokenizer": cfg.tokenizer,
        "seq_len": cfg.seq_len,
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.split_seed,
        "content": source_fingerprint(cfg),
    }
    if cfg.source == "hf":
        fields.update(hf_name=cfg.hf_name, hf_config=cfg.hf_config, hf_split=cfg.hf_split)
    if cfg.tokenizer == "pretrained":
        fields["tokenizer_sha"] = _file_digest(cfg.tokenizer_path or "")
    else:
        fields["vocab_size"] = cfg.vocab_size
    return fields


def corpus_slug(cfg: DataConfig) -> str:
    """Readable part of the directory name, e.g. `stdlib-bpe4096-seq128`."""
    if cfg.source == "hf":
        name = cfg.hf_name or "hf"
        if cfg.path:
            name = f"{name}-{Path(cfg.path).stem}"
    elif cfg.path:
        name = Path(cfg.path).stem or cfg.source
    else:
        name = cfg.source
    tok = "pretrained" if cfg.tokenizer == "pretrained" else f"{cfg.tokenizer}{cfg.vocab_size}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40].strip("_.-") or cfg.source
    return f"{slug}-{tok}-seq{cfg.seq_len}"


def corpus_dir(cfg: DataConfig) -> Path:
    """`cache_dir/<slug>-<hash>` for this config."""
    return cache_root(cfg) / f"{corpus_slug(cfg)}-{spec_hash(corpus_fields(cfg))}"


def is_prepared(directory: Path) -> bool:
    """A corpus directory is complete once its meta.json exists (it is written last, then renamed in)."""
    return (directory / META_FILE).is_file()


def read_meta(directory: str | Path) -> dict[str, Any]:
    """meta.json of a prepared corpus directory."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a prepared corpus (no {META_FILE}): {directory}")
    return json.loads(path.read_text())


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def split_documents(num_documents: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, val ids): a seeded shuffle of the documents, the first round(n * val_fraction) held out.

    Both splits keep at least one document; each comes back in its shuffled order, so contiguous
    portions of the packed train split are random subsets of documents.
    """
    if num_documents < 2:
        raise ConfigError(f"data: need at least 2 documents to split train/val, got {num_documents}")
    if seed < 0:
        raise ConfigError(f"data.split_seed must be >= 0, got {seed}")
    num_val = min(max(1, round(num_documents * val_fraction)), num_documents - 1)
    perm = np.random.default_rng(seed).permutation(num_documents)
    return perm[num_val:], perm[:num_val]


def pack_sequences(documents: Sequence[np.ndarray], seq_len: int, separator: int, dtype: np.dtype) -> np.ndarray:
    """Join `doc sep doc sep ...` and cut into non-overlapping rows of seq_len + 1 tokens (remainder dropped)."""
    total = sum(len(d) + 1 for d in documents)
    flat = np.empty(total, dtype=dtype)
    pos = 0
    for doc in documents:
        flat[pos : pos + len(doc)] = doc
        flat[pos + len(doc)] = separator
        pos += len(doc) + 1
    width = seq_len + 1
    rows = total // width
    return flat[: rows * width].reshape(rows, width)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )


def split_budgets(max_tokens: int | None, val_fraction: float) -> tuple[int | None, int | None]:
    """(train, val) shares of a `max_tokens` cap, val getting round(max_tokens * val_fraction) (at least 1)."""
    if max_tokens is None:
        return None, None
    val = min(max(1, round(max_tokens * val_fraction)), max_tokens - 1) if max_tokens > 1 else 1
    return max(1, max_tokens - val), val


def tokenize_documents(
    tok: Tokenizer,
    documents: Sequence[str],
    dtype: np.dtype,
    max_tokens: int | None = None,
    progress: bool = False,
    label: str = "tokenizing",
) -> list[np.ndarray]:
    """Token ids of each document (batched), stopping once `max_tokens` document tokens are kept.

    The returned list may be shorter than `documents` (the cap was reached); the last kept
    document is then truncated. Separators are not counted.
    """
    out: list[np.ndarray] = []
    kept = 0
    with _progress(progress) as bar:
        task = bar.add_task(label, total=len(documents))
        for start in range(0, len(documents), ENCODE_BATCH):
            chunk = documents[start : start + ENCODE_BATCH]
            for enc in tok.encode_batch(list(chunk), add_special_tokens=False):
                ids = np.asarray(enc.ids, dtype=dtype)
                if max_tokens is not None and kept + len(ids) >= max_tokens:
                    out.append(ids[: max_tokens - kept])
                    bar.update(task, completed=len(documents))
                    return out
                out.append(ids)
                kept += len(ids)
            bar.advance(task, len(chunk))
    return out


def _write_array(path: Path, array: np.ndarray) -> None:
    """Write `array` as a .npy through a memmap (readable back with np.load(mmap_mode='r'))."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    mm[...] = array
    mm.flush()
    del mm


def _build(cfg: DataConfig, out: Path, name: str, progress: bool) -> dict[str, Any]:
    """Do the work of `prepare_corpus` into directory `out` (to be renamed `name`); return the meta dict."""
    console = Console(stderr=True, quiet=not progress)
    t0 = time.perf_counter()
    console.print(f"reading documents ({cfg.source}) ...", highlight=False)
    docs = list(iter_documents(cfg, hf_cache_dir=cache_root(cfg) / "hf"))
    train_ids, val_ids = split_documents(len(docs), cfg.val_fraction, cfg.split_seed)
    console.print(f"{len(docs)} documents: {len(train_ids)} train, {len(val_ids)} val; building {cfg.tokenizer} tokenizer ...",
                  highlight=False)
    tok = build_tokenizer(cfg, [docs[i] for i in train_ids], progress=progress)
    sep = separator_id(tok, "data.tokenizer_path" if cfg.tokenizer == "pretrained" else "tokenizer")
    vocab_size = tok.get_vocab_size()
    dtype = token_dtype(vocab_size)
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION, "name": name, "fields": corpus_fields(cfg),
        "vocab_size": vocab_size, "separator_id": sep, "dtype": dtype.name, "seq_len": cfg.seq_len,
        "num_documents": len(docs),
    }
    budgets = split_budgets(cfg.max_tokens, cfg.val_fraction)
    for split, ids, budget in zip(SPLITS, (train_ids, val_ids), budgets):
        arrays = tokenize_documents(tok, [docs[i] for i in ids.tolist()], dtype, budget, progress, f"tokenizing {split}")
        seqs = pack_sequences(arrays, cfg.seq_len, sep, dtype)
        if len(seqs) == 0:
            raise ConfigError(
                f"data: the {split} split has {sum(len(a) + 1 for a in arrays)} tokens, fewer than one sequence of "
                f"seq_len + 1 = {cfg.seq_len + 1}; raise max_documents/max_tokens/val_fraction or lower seq_len"
            )
        _write_array(out / f"{split}.npy", seqs)
        meta[f"{split}_documents"] = len(arrays)
        meta[f"{split}_tokens"] = int(sum(len(a) for a in arrays))
        meta[f"num_{split}"] = int(len(seqs))
    tok.save(str(out / TOKENIZER_FILE))
    meta["prepare_seconds"] = round(time.perf_counter() - t0, 3)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


@contextlib.contextmanager
def _lock(final: Path) -> Iterator[None]:
    """An exclusive lock on a sibling lock file (one preparer at a time; others wait, then reuse).

    The lock file is removed when we leave without a published corpus (a failed build), so a
    failure leaves no new cache entry. Since it can be unlinked while another process waits on it,
    a waiter that wakes up holding an unlinked file retries on the current one.
    """
    cache = final.parent
    created_cache = not cache.exists()
    created_hf = not (cache / "hf").exists()  # the Hugging Face cache of `_build`
    cache.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: fall back to the rename check alone
        yield
        return
    path = cache / f".{final.name}.lock"
    while True:
        f = open(path, "w")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if os.fstat(f.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()  # unlinked by a failed preparer while we waited: lock the current file instead
    try:
        yield
    finally:
        if not is_prepared(final):
            with contextlib.suppress(OSError):
                path.unlink()
            if created_hf:
                with contextlib.suppress(OSError):
                    (cache / "hf").rmdir()  # only if empty
            if created_cache:
                with contextlib.suppress(OSError):
                    cache.rmdir()  # only if empty
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def prepare_corpus(cfg: DataConfig, progress: bool = True) -> Path:
    """The prepared corpus directory of `cfg`, building it on first use (a later call does no work)."""
    if cfg.is_vision:
        raise ConfigError(f"data.source: '{cfg.source}' is an image dataset; it has no token corpus")
    final = corpus_dir(cfg)
    if is_prepared(final):
        return final
    with _lock(final):
        if is_prepared(final):  # another process finished while we waited
            return final
        try:
            with atomic_directory(final) as tmp:
                _build(cfg, tmp, final.name, progress)
                if is_prepared(final):  # published meanwhile without the lock: keep theirs, drop ours
                    raise _AlreadyPrepared
        except _AlreadyPrepared:
            pass
    if progress:
        Console(stderr=True).print(f"prepared {final}", highlight=False)
    return final
