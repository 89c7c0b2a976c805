"""Document sources: each yields plain-text documents in a deterministic order.

Kinds (`DataConfig.source`):
- `stdlib`: the running interpreter's standard-library `.py` files (the embedded default corpus);
  one document per file, sorted by relative path, skipping site-packages, test suites and
  generated platform files.
- `text`: a `.txt` file or a directory of them. A directory gives one document per file (sorted
  relative paths, recursive); a single file is split on blank lines into paragraphs, one per document.
- `jsonl`: a `.jsonl` file or a directory of them (sorted); field `text_field` of each line.
- `parquet`: a `.parquet` file or a directory of them (sorted); column `text_field`.
- `hf`: `datasets.load_dataset(hf_name, hf_config, split=hf_split, streaming=streaming)`, field
  `text_field`. A local packaged builder (`hf_name` in json/parquet/text/csv) takes `path` as its
  `data_files` (a file, or a directory whose files are all used).
A hub dataset that is neither cached nor reachable (no network) raises `DataUnavailableError`.
`max_documents` caps the number of documents of every kind. Empty documents are skipped.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import itertools
import json
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsdlab.common.errors import ConfigError, DataUnavailableError
from wsdlab.data.config import DataConfig

STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
LOCAL_BUILDERS = frozenset({"json", "parquet", "text", "csv", "arrow"})
_BLANK_LINES = re.compile(r"\n[ \t]*\n+")
TEXT_CHUNK_BYTES = 1 << 22  # a single text file is read and split into paragraphs 4 MiB at a time


def stdlib_root() -> Path:
    """Directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _skip_stdlib_dir(name: str) -> bool:
    return name in STDLIB_SKIP_DIRS or name.startswith("config-") or name.startswith(".")


def stdlib_files(root: Path | None = None) -> list[Path]:
    """Sorted `.py` files of the standard library (no tests, site-packages or `_sysconfigdata*`)."""
    root = stdlib_root() if root is None else root
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skip_stdlib_dir(d))
        for name in filenames:
            if name.endswith(".py") and not name.startswith("_sysconfigdata"):
                files.append(Path(dirpath) / name)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def iter_stdlib(root: Path | None = None) -> Iterator[str]:
    """Standard-library source files, one document each."""
    for path in stdlib_files(root):
        yield _read_text(path)


def _existing(path: str) -> Path:
    """The local `data.path`, or FileNotFoundError naming it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data.path: {p} does not exist")
    return p


def _files_with_suffix(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """`root` itself if a file, else its files (recursive, sorted) ending in one of `suffixes`."""
    if root.is_file():
        return [root]
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.name.endswith(suffixes)),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise FileNotFoundError(f"data.path: no {'/'.join(suffixes)} files in {root}")
    return files


def split_paragraphs(path: Path, chunk_bytes: int = TEXT_CHUNK_BYTES) -> Iterator[str]:
    """`_BLANK_LINES.split(_read_text(path))`, read `chunk_bytes` at a time (the same pieces, without
    holding the file). A separator match is final once a character follows it in the buffer: the
    pattern only spans newlines, spaces and tabs, so later text can neither extend nor precede it."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    carry = ""
    with path.open("rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            final = not raw
            text = carry + decoder.decode(raw, final=final)
            start = 0
            for match in _BLANK_LINES.finditer(text):
                if not final and match.end() >= len(text):
                    break  # the separator may go on in the next chunk
                yield text[start : match.start()]
                start = match.end()
            carry = text[start:]
            if final:
                yield carry
                return


def iter_text(path: str) -> Iterator[str]:
    """A directory: one document per `.txt` file. A single file: one document per blank-line-separated paragraph."""
    root = _existing(path)
    if root.is_file():
        for para in split_paragraphs(root):
            yield para.strip("\n")
        return
    for file in _files_with_suffix(root, (".txt",)):
        yield _read_text(file)


def _field(record: dict[str, Any], text_field: str, where: str) -> str:
    if text_field not in record:
        raise ConfigError(f"data.text_field: '{text_field}' not found in {where} (keys: {sorted(record)[:10]})")
    value = record[text_field]
    return value if isinstance(value, str) else ("" if value is None else str(value))


def iter_jsonl(path: str, text_field: str) -> Iterator[str]:
    """Field `text_field` of each JSON line."""
    for file in _files_with_suffix(_existing(path), (".jsonl", ".json")):
        with file.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield _field(json.loads(line), text_field, f"{file}:{lineno}")


def iter_parquet(path: str, text_field: str, batch_size: int = 1024) -> Iterator[str]:
    """Column `text_field` of each Parquet row, read in record batches."""
    import pyarrow.parquet as pq

    for file in _files_with_suffix(_existing(path), (".parquet",)):
        pf = pq.ParquetFile(file)
        if text_field not in pf.schema_arrow.names:
            raise ConfigError(f"data.text_field: column '{text_field}' not in {file} (columns: {pf.schema_arrow.names})")
        for batch in pf.iter_batches(batch_size=batch_size, columns=[text_field]):
            for value in batch.column(0).to_pylist():
                yield "" if value is None else str(value)


def hf_data_files(cfg: DataConfig) -> list[str] | None:
    """`data_files` for a local packaged builder (`path` as a file or all files of a directory)."""
    if not cfg.path:
        return None
    root = _existing(cfg.path)
    if root.is_file():
        return [str(root)]
    files = sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"data.path: no files in {root}")
    return files


def iter_hf(cfg: DataConfig, cache_dir: Path | None = None) -> Iterator[str]:
    """Field `text_field` of a Hugging Face dataset (hub name, or a local builder with `path` as data files)."""
    import datasets

    if cfg.hf_name in LOCAL_BUILDERS and not cfg.path:
        raise ConfigError(f"data.path: hf builder '{cfg.hf_name}' needs path (its data files)")
    kwargs: dict[str, Any] = {"split": cfg.hf_split, "streaming": cfg.streaming}
    files = hf_data_files(cfg)
    if files is not None:
        kwargs["data_files"] = files
    if cache_dir is not None and not cfg.streaming:
        kwargs["cache_dir"] = str(cache_dir)
    try:
        ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config, **kwargs)
        for i, record in enumerate(ds):
            yield _field(record, cfg.text_field, f"{cfg.hf_name} row {i}")
    except Exception as err:
        if _is_unreachable(err) and files is None:
            raise DataUnavailableError(
                f"data.hf_name: dataset '{cfg.hf_name}' cannot be loaded here ({type(err).__name__}: "
                f"{' '.join(str(err).split())}); without network only datasets already in the Hugging Face "
                f"cache load: prepare it once online, or use a local source (text/jsonl/parquet)") from None
        raise


def _is_unreachable(err: BaseException) -> bool:
    """A hub dataset that is neither reachable nor cached: network errors, offline mode, not found."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS):
        return False  # a local disk problem: let it through with its filename
    names = {c.__name__ for c in type(err).__mro__}
    return isinstance(err, (ConnectionError, TimeoutError)) or bool(names & {
        "ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "DatasetNotFoundError",
        "HfHubHTTPError", "RepositoryNotFoundError", "Timeout"})


def iter_documents(cfg: DataConfig, hf_cache_dir: Path | None = None) -> Iterator[str]:
    """The non-empty documents of `cfg`'s text source, at most `max_documents` of them."""
    if cfg.is_vision:
        raise ConfigError(f"data.source: '{cfg.source}' is an image dataset, not a text source")
    if cfg.source == "stdlib":
        docs = iter_stdlib()
    elif cfg.source == "text":
        docs = iter_text(cfg.path or "")
    elif cfg.source == "jsonl":
        docs = iter_jsonl(cfg.path or "", cfg.text_field)
    elif cfg.source == "parquet":
        docs = iter_parquet(cfg.path or "", cfg.text_field)
    elif cfg.source == "hf":
        docs = iter_hf(cfg, hf_cache_dir)
    else:  # pragma: no cover - guarded by the Literal type
        raise ValueError(f"data.source: unknown source '{cfg.source}'")
    return itertools.islice((d for d in docs if d), cfg.max_documents)


def _stat_fingerprint(root: Path) -> str:
    """Hash of (relative path, size, mtime) of every file under `root`: changes when the data changes."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        rel = p.name if p == root else p.relative_to(root).as_posix()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def source_fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What identifies the source's content beyond the config: the Python version or local file stats."""
    if cfg.source == "stdlib":
        return {"python": ".".join(map(str, sys.version_info[:3])), "stdlib": str(stdlib_root())}
    if cfg.path:
        root = _existing(cfg.path)
        return {"path": str(root.resolve()), "files": _stat_fingerprint(root)}
    return {}
