"""Document sources: stdlib determinism, local text/jsonl/parquet files, the hf path via a local json file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wsdlab.data.config import DataConfig
from wsdlab.data.sources import iter_documents, source_fingerprint, stdlib_files, stdlib_root

DOCS = ["first document\nline two", "second: ünïcode ✓", "third\n\nwith a blank line"]


@pytest.fixture()
def jsonl_file(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    return path


def test_stdlib_files_sorted_without_tests_or_site_packages() -> None:
    files = stdlib_files()
    root = stdlib_root()
    rel = [f.relative_to(root).as_posix() for f in files]
    assert rel == sorted(rel) and len(rel) > 100
    assert all(r.endswith(".py") for r in rel)
    assert not any(part in ("test", "tests", "site-packages", "idle_test") for r in rel for part in r.split("/"))
    assert "os.py" in rel and not any(r.startswith("_sysconfigdata") for r in rel)


def test_stdlib_documents_are_deterministic_files() -> None:
    cfg = DataConfig(max_documents=5)
    first, second = list(iter_documents(cfg)), list(iter_documents(cfg))
    assert first == second and len(first) == 5
    expected = [p.read_text(encoding="utf-8") for p in stdlib_files()[:5]]
    assert first == [d for d in expected if d][:5]


def test_text_directory_one_document_per_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.txt").write_text("ay")
    (tmp_path / "sub" / "c.txt").write_text("sea\n\nmore")
    (tmp_path / "ignored.md").write_text("no")
    assert list(iter_documents(DataConfig(source="text", path=str(tmp_path)))) == ["ay", "bee", "sea\n\nmore"]


def test_text_single_file_splits_on_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("para one\nstill one\n\n\npara two\n  \npara three\n")
    docs = list(iter_documents(DataConfig(source="text", path=str(path))))
    assert docs == ["para one\nstill one", "para two", "para three"]


def test_jsonl_field_and_max_documents(jsonl_file: Path) -> None:
    assert list(iter_documents(DataConfig(source="jsonl", path=str(jsonl_file)))) == DOCS
    assert list(iter_documents(DataConfig(source="jsonl", path=str(jsonl_file), max_documents=2))) == DOCS[:2]


def test_jsonl_missing_field_names_text_field(jsonl_file: Path) -> None:
    with pytest.raises(ValueError, match="data.text_field.*body"):
        list(iter_documents(DataConfig(source="jsonl", path=str(jsonl_file), text_field="body")))


def test_parquet_column(tmp_path: Path) -> None:
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"content": DOCS, "n": [1, 2, 3]}), path, row_group_size=2)
    assert list(iter_documents(DataConfig(source="parquet", path=str(path), text_field="content"))) == DOCS
    with pytest.raises(ValueError, match="data.text_field"):
        list(iter_documents(DataConfig(source="parquet", path=str(path))))


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_path_with_local_json_builder(jsonl_file: Path, tmp_path: Path, streaming: bool) -> None:
    cfg = DataConfig(source="hf", hf_name="json", path=str(jsonl_file), streaming=streaming)
    assert list(iter_documents(cfg, hf_cache_dir=tmp_path / "hf")) == DOCS


def test_hf_local_builder_needs_path() -> None:
    with pytest.raises(ValueError, match="data.path"):
        list(iter_documents(DataConfig(source="hf", hf_name="json")))


@pytest.mark.parametrize("source", ["text", "jsonl", "parquet"])
def test_missing_path_names_field_and_path(tmp_path: Path, source: str) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"data.path.*{missing}"):
        list(iter_documents(DataConfig(source=source, path=str(missing))))


def test_fingerprint_changes_with_file_content(jsonl_file: Path) -> None:
    cfg = DataConfig(source="jsonl", path=str(jsonl_file))
    before = source_fingerprint(cfg)
    assert source_fingerprint(cfg) == before
    jsonl_file.write_text(jsonl_file.read_text() + json.dumps({"text": "new"}) + "\n")
    os.utime(jsonl_file, ns=(1, 1))
    assert source_fingerprint(cfg) != before


def test_single_text_file_is_split_a_chunk_at_a_time_into_the_same_paragraphs(tmp_path: Path) -> None:
    """Streaming `split_paragraphs` equals splitting the whole decoded file, for every chunk size, with
    separators, multi-byte characters and invalid UTF-8 falling across chunk boundaries."""
    import random

    from wsdlab.data.sources import _BLANK_LINES, _read_text, split_paragraphs

    rng = random.Random(0)
    pieces = [b"a", b"word ", b"\n", b"\n\n", b" ", b"\t", b"\r\n", "é✓".encode(), b"\xff", b"\xe2\x9c", b"\n \t\n\n"]
    for trial in range(40):
        path = tmp_path / f"t{trial}.txt"
        path.write_bytes(b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 300))))
        expected = _BLANK_LINES.split(_read_text(path))
        for chunk in (1, 2, 3, 7, 64, 1 << 20):
            assert list(split_paragraphs(path, chunk)) == expected, (trial, chunk)
