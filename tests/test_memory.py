"""Memory per device (wsdlab.train.memory): per-block activations against the bytes autograd really saves,
whole estimates by hand, and `wsdlab study plan`'s memory column and warning."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from wsdlab.cli import app
from wsdlab.common.errors import ConfigError
from wsdlab.models import build_model, model_config
from wsdlab.study.compute import DEVICE_MEMORY, DEVICE_PEAK_FLOPS, fits, run_memory
from wsdlab.train.config import RunSpec
from wsdlab.train.memory import block_activation_bytes, estimate_memory, micro_batch_per_device

B, T = 5, 32  # b and b T match no weight dimension: saved weights are told apart by shape


def _saved_bytes_per_token(cfg, autocast: bool) -> float:
    """Bytes of the distinct storages autograd saves in one block's forward, activations only."""
    model = build_model(cfg).train()
    x = torch.randn(B, T, cfg.d_model, requires_grad=True)
    cos, sin = model._tables(T)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dim() and t.shape[0] in (B, B * T):  # (B, ...) or (B T, ...): activations, not weights or RoPE tables
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.layers[0](x, cos, sin)
    return sum(seen.values()) / (B * T)


BLOCKS = {
    "llama": dict(preset="tiny", vocab_size=64, seq_len=T, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=96),
    "neox": dict(preset="pythia-160m", vocab_size=64, seq_len=T, d_model=64, n_layers=1, n_heads=4, ffn_dim=256),
    "neox-sequential": dict(preset="pythia-160m", vocab_size=64, seq_len=T, d_model=64, n_layers=1, n_heads=4,
                            ffn_dim=256, parallel_residual=False),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("autocast", [False, True])
def test_block_activations_are_the_bytes_autograd_saves(name: str, autocast: bool) -> None:
    kw = dict(BLOCKS[name])
    cfg = model_config(kw.pop("preset"), **kw)
    torch.manual_seed(0)
    assert block_activation_bytes(cfg, "autocast" if autocast else "fp32") == _saved_bytes_per_token(cfg, autocast)


def _spec(**train) -> RunSpec:
    # Llama: V 64, d 32, L 2, H 4, K 2 (hd 8), F 48, untied. N by hand: embedding 2048 + output 2048 + 2 blocks x
    # (wq 1024 + wk 512 + wv 512 + wo 1024 + 3 x 32 x 48 = 4608 + norms 64 = 7744) + final norm 32 = 19,616.
    model = model_config("tiny", vocab_size=64, seq_len=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48)
    return RunSpec.model_validate({"model": model.model_dump(), "data": {"seq_len": 16, "vocab_size": 64},
                                   "train": {"steps": 10, "batch_size": 4, "micro_batch_size": 2, **train}})


def test_fp32_single_device_by_hand() -> None:
    est = estimate_memory(_spec(precision="fp32"), 1, "cpu")
    assert (est.weights, est.gradients, est.optimizer) == (4 * 19616, 4 * 19616, 8 * 19616)
    # per token: block 24 d + 16 H hd + 16 F + 4 H + 8 = 768 + 512 + 768 + 16 + 8 = 2072, two of them;
    # head: last output 4 d + final norm 8 d + logits 12 V = 128 + 256 + 768 = 1152; 2 x 16 tokens
    assert est.activations == 32 * (2 * 2072 + 1152)
    assert est.total == 16 * 19616 + 32 * 5296 and est.micro_batch == 2
    # checkpointing: each block keeps its input (4 d = 128), one block is recomputed at a time
    ckpt = estimate_memory(_spec(precision="fp32", activation_checkpointing=True), 1, "cpu")
    assert ckpt.activations == 32 * (2 * 128 + 2072 + 1152)


def test_bf16_fsdp_with_the_policy_by_hand() -> None:
    est = estimate_memory(_spec(precision="bf16", fsdp=True), 4, "cuda")
    # N_blk 7744, N_root = 2 x 2048 + 32 = 4128; bf16 unsharded root + two blocks; a block's bf16 + fp32 gradient
    assert est.weights == 19616 + 2 * (4128 + 2 * 7744)
    assert est.gradients == 19616 + 2 * 4128 + 6 * 7744
    assert est.optimizer == 2 * 19616
    # policy: block 20 d + 8 H hd + 8 F + 4 H + 8 = 640 + 256 + 384 + 24 = 1304; head 2 d + 8 d + 12 V = 1088
    assert est.activations == 32 * (2 * 1304 + 1088)


def test_bf16_ddp_keeps_autocast_copies_and_buckets() -> None:
    est = estimate_memory(_spec(precision="bf16"), 2, "cuda")
    # matmul weights: 2 x (1024 + 512 + 512 + 1024 + 4608) + the output head 2048 = 17,408, 2 bytes each
    assert est.weights == 4 * 19616 + 2 * 17408
    assert est.gradients == 8 * 19616  # gradients + DDP's buckets
    # autocast: block 26 d + 8 H hd + 8 F + 4 H + 8 = 832 + 256 + 384 + 24 = 1496; head 4 d + 6 d + 12 V = 1088
    assert est.activations == 32 * (2 * 1496 + 1088)
    # precision auto: bf16 on a GPU, fp32 on the CPU
    assert estimate_memory(_spec(), 2, "cuda") == est
    assert estimate_memory(_spec(), 1, "cpu") == estimate_memory(_spec(precision="fp32"), 1, "cpu")


def test_micro_batch_defaults_to_the_devices_share() -> None:
    spec = _spec(micro_batch_size=None, batch_size=8)
    assert micro_batch_per_device(spec, 4) == 2 and micro_batch_per_device(spec, 3) == 3
    with pytest.raises(ValueError, match="devices"):
        estimate_memory(spec, 0)


def test_paper_presets_fit_an_h100_node_only_with_fsdp() -> None:
    from wsdlab.train import run_preset

    for name in ("1B", "8B"):
        on_8 = run_memory(run_preset(name), "h100", 8)
        assert fits(on_8, "h100"), (name, on_8)
        assert on_8.optimizer == pytest.approx(8 * 1_235_814_400 / 8 if name == "1B" else 8 * 8_030_261_248 / 8, abs=1)
    assert not fits(run_memory(run_preset("8B"), "h100", 1), "h100")  # no sharding on one GPU: 16 bytes x 8B


def test_device_memory_table_and_errors() -> None:
    assert DEVICE_MEMORY.keys() == DEVICE_PEAK_FLOPS.keys()
    assert DEVICE_MEMORY["h100"] == 80 * 2**30 and DEVICE_MEMORY["h200"] == 141 * 2**30
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        run_memory(_spec(), "tpu", 1)
    with pytest.raises(ConfigError, match="--gpus"):
        run_memory(_spec(), "h100", 0)


def test_plan_prints_memory_per_gpu_and_warns_when_it_does_not_fit(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    ok = runner.invoke(app, ["study", "plan", "wso-1b", "--out", str(tmp_path / "s"), "--device", "h100"])
    assert ok.exit_code == 0, ok.output
    assert "memory per GPU with 8 GPUs per run (--gpus)" in ok.stdout
    # one line per distinct estimate: all 135 runs of wso-1b share one (micro batch 8, 8-way FSDP)
    mem = run_memory(RunSpec.model_validate(_wso_1b_pretrain()), "h100", 8)
    assert (f"  {mem.total / 2**30:.1f} GiB = {mem.weights / 2**30:.1f} + {mem.gradients / 2**30:.1f} + "
            f"{mem.optimizer / 2**30:.1f} + {mem.activations / 2**30:.1f} (micro batch 8): 7 runs of pretrain, "
            "8 runs of mid, 56 runs of sft, 64 runs of sft_mid") in ok.stdout
    assert "warning" not in ok.stdout
    bad = runner.invoke(app, ["study", "plan", "wso-1b", "--out", str(tmp_path / "s"), "--device", "l40s", "--gpus", "1"])
    assert bad.exit_code == 0, bad.output
    assert "warning: 135 runs need more than the 48 GiB of one l40s (first: pretrain-wso-alpha1)" in bad.stdout
    assert not (tmp_path / "s").exists()


def _wso_1b_pretrain() -> dict:
    from wsdlab.study.plan import expand_plan
    from wsdlab.study.spec import find_study, load_study

    study = load_study(find_study("wso-1b", False))
    plan = expand_plan(study, None)
    return plan.runs[0].spec.model_dump()
