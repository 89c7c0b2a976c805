"""`wsdlab data prepare` / `wsdlab data show` on a tiny corpus."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from wsdlab.cli import app
from wsdlab.data import DataConfig, corpus_dir, read_meta

runner = CliRunner()


def write_config(tmp_path: Path) -> Path:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i}: " + "words and more words " * (5 + i)}) + "\n"
                              for i in range(12)))
    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({"source": "jsonl", "path": str(corpus), "vocab_size": 300, "seq_len": 64}))
    return config


def test_prepare_then_show(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cache = tmp_path / "cache"
    args = ["--config", str(config), "--set", "seq_len=16", "--set", "order.seed=2", "--cache-dir", str(cache)]
    result = runner.invoke(app, ["data", "prepare", *args, "--no-progress"])
    assert result.exit_code == 0, result.output
    expected = corpus_dir(DataConfig(**yaml.safe_load(config.read_text()) | {"seq_len": 16, "cache_dir": str(cache)}))
    meta = read_meta(expected)
    assert str(expected) in result.output.replace("\n", "")
    assert f"{meta['num_train']} sequences of 17 tokens" in result.output
    assert meta["seq_len"] == 16

    shown = runner.invoke(app, ["data", "show", *args, "--chars", "80"])
    assert shown.exit_code == 0, shown.output
    assert "val sequence 0" in shown.output and "words" in shown.output


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    bad_key = runner.invoke(app, ["data", "prepare", "--config", str(config), "--set", "seq_lenn=8"])
    assert bad_key.exit_code == 2 and "seq_lenn" in bad_key.output
    missing = runner.invoke(app, ["data", "prepare", "--set", "source=text", "--set", f"path={tmp_path / 'nope'}"])
    assert missing.exit_code == 2 and "data.path" in missing.output and "Traceback" not in missing.output
    no_file = runner.invoke(app, ["data", "prepare", "--config", str(tmp_path / "none.yaml")])
    assert no_file.exit_code == 2 and "none.yaml" in no_file.output


def test_bad_user_files_are_one_error_line_naming_the_file(tmp_path: Path) -> None:
    # an empty SFT JSONL (was `internal error: StopIteration`), a binary one, a tokenizer file that is not JSON
    config = write_config(tmp_path)
    cache = ["--set", "seq_len=16", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    empty, binary, tok = tmp_path / "empty.jsonl", tmp_path / "binary.jsonl", tmp_path / "tok.json"
    empty.write_bytes(b"")
    binary.write_bytes(b"\x00\xff\xfe\x89PNG\r\n binary")
    tok.write_text("not json at all\n")
    for sft_file in (empty, binary):
        sft = ["--set", "sft.source=hf", "--set", "sft.hf_name=json", "--set", f"sft.path={sft_file}"]
        result = runner.invoke(app, ["data", "prepare", "--config", str(config), *sft, *cache])
        out = result.output.replace("\n", "")
        assert result.exit_code == 2 and "error: data.sft.path" in out and str(sft_file) in out, result.output
        assert "internal error" not in out
    result = runner.invoke(app, ["data", "prepare", "--config", str(config), "--set", "tokenizer=pretrained",
                                 "--set", f"tokenizer_path={tok}", *cache])
    out = result.output.replace("\n", "")
    assert result.exit_code == 2 and "error: data.tokenizer_path" in out and str(tok) in out, result.output
    assert "internal error" not in out
