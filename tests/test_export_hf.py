"""Export to a Hugging Face model directory: transformers loads it and its logits match wsdlab's model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wsdlab.common.errors import ConfigError
from wsdlab.train import RunSpec, run_preset, train
from wsdlab.train.export import export_hf

transformers = pytest.importorskip("transformers")


def _run(tmp_path: Path, **model: object):
    data = run_preset("micro").model_dump()
    data["model"].update(vocab_size=512, seq_len=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
                         **model)
    data["data"].update(max_documents=200, vocab_size=512, seq_len=32)
    data["schedule"].update(kind="wso", warmup_steps=1)
    data["train"].update(steps=3, batch_size=4, eval_every=3, eval_batches=1, snapshot_every=None, progress=False,
                         device="cpu")
    return train(RunSpec.model_validate(data), tmp_path / "run")


@pytest.mark.parametrize("tied", [True, False])
def test_export_loads_in_transformers_and_matches_logits(tmp_path: Path, tied: bool) -> None:
    run = _run(tmp_path, tie_embeddings=tied, rope_theta=10000.0)
    out = export_hf(run.checkpoint(3), tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 2
    assert cfg["tie_word_embeddings"] is tied and cfg["rope_theta"] == 10000.0
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32).eval()
    ours = run.load_model(3)
    ids = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ours(ids)
        got = hf(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_exported_tokenizer_encodes_like_the_runs(tmp_path: Path) -> None:
    from wsdlab.data import load_data

    run = _run(tmp_path)
    out = export_hf(run.checkpoint(3), tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    bundle = load_data(run.spec.data, progress=False)
    text = "def add(a, b):\n    return a + b\n"
    assert tok(text, add_special_tokens=False)["input_ids"] == bundle.tokenizer.encode(text, add_special_tokens=False).ids
    assert tok.eos_token == "<|endoftext|>"


def test_export_refuses_an_existing_directory(tmp_path: Path) -> None:
    run = _run(tmp_path)
    (tmp_path / "hf").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        export_hf(run.checkpoint(3), tmp_path / "hf")


def test_cli_export_writes_the_directory(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wsdlab.cli import app

    run = _run(tmp_path)
    result = CliRunner().invoke(app, ["export", str(run.checkpoint(3)), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "hf").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                            "tokenizer_config.json"}
    again = CliRunner().invoke(app, ["export", str(run.checkpoint(3)), str(tmp_path / "hf")])
    assert again.exit_code == 2 and "already exists" in again.output
