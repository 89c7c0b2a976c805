"""Run presets: every name builds a valid spec whose model fits its data; metrics sinks behave."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from wsdlab.schedules import build_schedule
from wsdlab.train import RUN_PRESETS, JsonlSink, TensorBoardSink, WandbSink, run_preset
from wsdlab.train.metrics import flat_metrics


@pytest.mark.parametrize("name", list(RUN_PRESETS))
def test_every_preset_is_a_valid_stable_phase(name: str) -> None:
    spec = run_preset(name)
    assert spec.schedule.kind == "wso" and spec.init_from is None
    assert spec.model.preset == name
    build_schedule(spec.schedule, spec.train.steps)
    if not spec.data.is_vision:
        assert spec.model.vocab_size >= spec.data.vocab_size and spec.model.seq_len >= spec.data.seq_len


def test_the_embedded_default_and_the_big_presets() -> None:
    tiny = run_preset("tiny")
    assert tiny.data.source == "stdlib" and tiny.train.batch_size == 16 and tiny.train.steps == 400
    assert tiny.model.preset == "tiny" and tiny.train.checkpoint_every == 100
    assert run_preset("8B").train.fsdp and run_preset("1B").train.fsdp and not run_preset("210M").train.fsdp
    assert run_preset("cnn-fmnist").data.source == "fashion_mnist" and run_preset("cnn").data.source == "cifar10"
    assert run_preset("tiny") is not run_preset("tiny")  # fresh copies
    with pytest.raises(ValueError, match="unknown preset 'nope'; known: tiny"):
        run_preset("nope")


def test_jsonl_sink_and_flat_keys(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "m.jsonl")
    flat = flat_metrics({"step": 3, "loss": 2.5, "lr": 0.1, "grad_momentum_cos": None})
    assert flat == {"train/loss": 2.5, "train/lr": 0.1}
    assert flat_metrics({"split": "val", "step": 3, "val_loss": 1.5}) == {"val/loss": 1.5}
    sink.log(flat, 3)
    sink.close()
    assert json.loads((tmp_path / "m.jsonl").read_text()) == {"step": 3, "train/loss": 2.5, "train/lr": 0.1}


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_optional_sinks_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"wsdlab\[tensorboard\]"):
        TensorBoardSink(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_sink_says_what_to_install() -> None:
    with pytest.raises(ValueError, match=r"wsdlab\[wandb\]"):
        WandbSink("project")


def test_universality_presets_follow_the_paper() -> None:
    """Paper 001, App. A: LM "approximately 3 billion tokens [...] batch size of 256 and a sequence length
    of 2048" on SlimPajama, cooldown 20%; CNN "batch size of 128", "about 50 epochs", cooldown 35%."""
    from wsdlab.train.presets import PAPER_COOLDOWN_FRACTION

    lm = run_preset("pythia-160m")
    assert (lm.train.batch_size, lm.data.seq_len, lm.model.seq_len) == (256, 2048, 2048)
    assert "SlimPajama" in (lm.data.hf_name or "")
    assert abs(lm.train.steps * 256 * 2048 / 3e9 - 1) < 0.01
    cifar, fmnist = run_preset("cnn"), run_preset("cnn-fmnist")
    assert cifar.train.batch_size == fmnist.train.batch_size == 128
    assert abs(cifar.train.steps * 128 / 50_000 - 50) < 0.1 and abs(fmnist.train.steps * 128 / 60_000 - 50) < 0.1
    assert PAPER_COOLDOWN_FRACTION == {"pythia-160m": 0.2, "cnn": 0.35, "cnn-fmnist": 0.35}


def test_wso_paper_presets_follow_table6() -> None:
    # Table 6: 80,000 steps, batch 4,194,304 (1B) / 12,582,912 (8B) tokens, seq 2048, lr 3e-4, warmup 1,000,
    # wd 0.1, betas 0.9/0.95, clip 1.0, bf16, WSD stable ratio 0.75; App. A: RoPE theta 10,000, vocab 128,256
    for name, tokens in (("1B", 4_194_304), ("8B", 12_582_912)):
        spec = run_preset(name)
        assert spec.train.steps == 80_000 and spec.train.batch_tokens == tokens and spec.data.seq_len == 2048
        assert (spec.optim.lr, spec.optim.beta1, spec.optim.beta2, spec.optim.weight_decay) == (3e-4, 0.9, 0.95, 0.1)
        assert spec.optim.grad_clip == 1.0 and spec.train.precision == "bf16"
        assert spec.schedule.warmup_steps == 1000 and spec.schedule.stable_ratio == 0.75
        assert spec.model.rope_theta == 10000.0 and spec.model.vocab_size == 128256 and spec.model.norm_eps == 1e-5


def test_wso_presets_read_a_local_llama3_tokenizer(monkeypatch) -> None:
    monkeypatch.setenv("WSDLAB_LLAMA3_TOKENIZER", "/models/llama3/tokenizer.json")
    spec = run_preset("1B")
    assert spec.data.tokenizer == "pretrained" and spec.data.tokenizer_path == "/models/llama3/tokenizer.json"
