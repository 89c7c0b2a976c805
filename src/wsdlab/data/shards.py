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

Preparation streams, so memory does not grow with the corpus: the documents are read once and
spooled to a file in the build directory (`DocumentStore`; the split needs them in a shuffled
order), the tokenizer is trained from an iterator over the train documents, and each split is
tokenized in batches of ENCODE_BATCH documents and written CHUNK_TOKENS at a time (`RowWriter`).
What stays in memory per document is 16 bytes (its offset and its place in the permutation). The
result is byte for byte what packing in memory wrote (`pack_sequences` + `np.save`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
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
CHUNK_TOKENS = 1 << 24  # tokens a split writer buffers before writing whole rows (32 MiB of uint16)
DOCUMENTS_FILE = ".documents.bin"  # the spooled documents, inside the build directory while it is built


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


def prepared_meta(cfg: DataConfig) -> dict[str, Any] | None:
    """meta.json of `cfg`'s corpus if it is already prepared, else None; never prepares anything
    (a local source or tokenizer file that is missing also gives None)."""
    try:
        directory = corpus_dir(cfg)
    except (FileNotFoundError, ConfigError):
        return None
    return read_meta(directory) if is_prepared(directory) else None


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


class DocumentStore:
    """The source's documents spooled once to a file (UTF-8 bytes + offsets), read back by index.

    The split shuffles documents, so packing reads them in a random order; spooling them to disk
    keeps that order without holding the corpus in memory (8 bytes per document stay: the offsets).
    Reads use pread, not a memory map, so the pages read do not stay in the process's memory.
    """

    def __init__(self, path: Path, documents: Iterable[str]) -> None:
        self.path = path
        offsets = array("q", [0])
        with open(path, "wb") as f:
            pos = 0
            for doc in documents:
                data = doc.encode("utf-8", "surrogatepass")  # exact round trip, even of lone surrogates
                f.write(data)
                pos += len(data)
                offsets.append(pos)
        self.offsets = np.frombuffer(offsets, dtype=np.int64)
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        return os.pread(self._fd, stop - start, start).decode("utf-8", "surrogatepass")

    def iterate(self, ids: np.ndarray) -> Iterator[str]:
        """The documents `ids`, in that order."""
        for i in ids:
            yield self[int(i)]

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


class RowWriter:
    """Writes `doc sep doc sep ...` as rows of `width` tokens into a .npy file, a chunk at a time.

    The same bytes as `np.save(path, pack_sequences(...))` through `open_memmap`: the header is
    written for the final row count at `close` (numpy pads the header so its length does not depend
    on the number of rows). Memory: one chunk of `chunk_rows` rows.
    """

    def __init__(self, path: Path, width: int, separator: int, dtype: np.dtype, chunk_rows: int) -> None:
        self.path, self.width, self.dtype = path, width, dtype
        self.separator = separator
        self.buffer = np.empty(max(1, chunk_rows) * width, dtype=dtype)
        self.fill = 0  # tokens in the buffer
        self.rows = 0  # rows written to the file
        self.tokens = 0  # tokens of the stream (document tokens + separators)
        self.header_len = len(self._header(0))
        self.file = open(path, "wb")
        self.file.write(b"\0" * self.header_len)

    def _header(self, rows: int) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (rows, self.width)})
        return buf.getvalue()

    def _put(self, ids: np.ndarray) -> None:
        pos = 0
        while pos < len(ids):
            take = min(len(ids) - pos, len(self.buffer) - self.fill)
            self.buffer[self.fill : self.fill + take] = ids[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == len(self.buffer):
                self._flush()

    def _flush(self) -> None:
        """Write the buffer's whole rows; keep the partial row's tokens at its front."""
        full = (self.fill // self.width) * self.width
        self.file.write(self.buffer[:full].tobytes())
        self.rows += full // self.width
        rest = self.fill - full
        self.buffer[:rest] = self.buffer[full : self.fill]
        self.fill = rest

    def add(self, ids: np.ndarray) -> None:
        """Append one document's tokens and a separator to the stream."""
        self._put(np.asarray(ids, dtype=self.dtype))
        self._put(np.array([self.separator], dtype=self.dtype))
        self.tokens += len(ids) + 1

    def close(self) -> int:
        """Write the remaining whole rows (the partial one is dropped) and the header; the row count."""
        self._flush()
        header = self._header(self.rows)
        if len(header) != self.header_len:  # pragma: no cover - numpy pads the shape, so this never happens
            raise RuntimeError(f"npy header length changed from {self.header_len} to {len(header)}")
        self.file.seek(0)
        self.file.write(header)
        self.file.close()
        return self.rows


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def write_split(
    tok: Tokenizer,
    documents: Iterable[str],
    num_documents: int,
    path: Path,
    seq_len: int,
    separator: int,
    dtype: np.dtype,
    max_tokens: int | None = None,
    chunk_tokens: int | None = None,
    progress: bool = False,
    label: str = "tokenizing",
) -> dict[str, int]:
    """Tokenize `documents` in batches and stream them into `path` as rows of seq_len + 1 tokens.

    The file equals `pack_sequences(tokenize_documents(...))` saved as .npy, without holding either:
    memory is one encode batch plus a chunk of about `chunk_tokens` tokens (default `CHUNK_TOKENS`). Returns the counts
    (`documents`, `tokens`: document tokens kept, separators not counted; `rows`; `stream`: with them).
    """
    width = seq_len + 1
    writer = RowWriter(path, width, separator, dtype, max(1, (chunk_tokens or CHUNK_TOKENS) // width))
    kept = docs = 0
    done = False
    with _progress(progress) as bar:
        task = bar.add_task(label, total=num_documents)
        for chunk in _batches(documents, ENCODE_BATCH):
            for enc in tok.encode_batch(list(chunk), add_special_tokens=False):
                ids = np.asarray(enc.ids, dtype=dtype)
                if max_tokens is not None and kept + len(ids) >= max_tokens:
                    ids, done = ids[: max_tokens - kept], True
                writer.add(ids)
                kept += len(ids)
                docs += 1
                if done:
                    break
            bar.advance(task, len(chunk))
            if done:
                bar.update(task, completed=num_documents)
                break
    rows = writer.close()
    return {"documents": docs, "tokens": kept, "rows": rows, "stream": writer.tokens}


def _build(cfg: DataConfig, out: Path, name: str, progress: bool) -> dict[str, Any]:
    """Do the work of `prepare_corpus` into directory `out` (to be renamed `name`); return the meta dict.

    Streams: the documents are spooled to a file in `out` (removed at the end), the tokenizer is
    trained from an iterator over the train documents, and each split is tokenized and written a
    chunk at a time, so memory does not grow with the corpus (beyond 16 bytes per document: the
    offsets and the split's permutation).
    """
    console = Console(stderr=True, quiet=not progress)
    t0 = time.perf_counter()
    console.print(f"reading documents ({cfg.source}) ...", highlight=False)
    store = DocumentStore(out / DOCUMENTS_FILE, iter_documents(cfg, hf_cache_dir=cache_root(cfg) / "hf"))
    try:
        train_ids, val_ids = split_documents(len(store), cfg.val_fraction, cfg.split_seed)
        console.print(f"{len(store)} documents: {len(train_ids)} train, {len(val_ids)} val; "
                      f"building {cfg.tokenizer} tokenizer ...", highlight=False)
        tok = build_tokenizer(cfg, store.iterate(train_ids), progress=progress)
        sep = separator_id(tok, "data.tokenizer_path" if cfg.tokenizer == "pretrained" else "tokenizer")
        vocab_size = tok.get_vocab_size()
        dtype = token_dtype(vocab_size)
        meta: dict[str, Any] = {
            "format": FORMAT_VERSION, "name": name, "fields": corpus_fields(cfg),
            "vocab_size": vocab_size, "separator_id": sep, "dtype": dtype.name, "seq_len": cfg.seq_len,
            "num_documents": len(store),
        }
        budgets = split_budgets(cfg.max_tokens, cfg.val_fraction)
        for split, ids, budget in zip(SPLITS, (train_ids, val_ids), budgets):
            counts = write_split(tok, store.iterate(ids), len(ids), out / f"{split}.npy", cfg.seq_len, sep, dtype,
                                 budget, None, progress, f"tokenizing {split}")
            if counts["rows"] == 0:
                raise ConfigError(
                    f"data: the {split} split has {counts['stream']} tokens, fewer than one sequence of "
                    f"seq_len + 1 = {cfg.seq_len + 1}; raise max_documents/max_tokens/val_fraction or lower seq_len"
                )
            meta[f"{split}_documents"] = counts["documents"]
            meta[f"{split}_tokens"] = counts["tokens"]
            meta[f"num_{split}"] = counts["rows"]
    finally:
        store.close()
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
