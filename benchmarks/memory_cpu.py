"""Measured CPU peak memory of training steps vs `wsdlab.train.memory.estimate_memory` (fp32).

Each configuration runs in a fresh child process (glibc's mmap threshold fixed, so freed tensors leave
the RSS): the RSS after the model is built is the baseline (weights + the interpreter), then two optimizer
steps of two micro batches each (AdamW, clipping, as the training loop does); the peak RSS growth
(ru_maxrss) is compared with gradients + optimizer state + activations of the estimate (the weights are
in the baseline). Run: `python benchmarks/memory_cpu.py` (about a minute of one CPU core).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

CONFIGS = [
    # (name, model preset, overrides, micro batch, seq_len, checkpointing)
    ("llama-4L mb8", "tiny", dict(vocab_size=8192, d_model=256, n_layers=4, n_heads=8, n_kv_heads=2, ffn_dim=768), 8, 256, False),
    ("llama-4L mb8 ckpt", "tiny", dict(vocab_size=8192, d_model=256, n_layers=4, n_heads=8, n_kv_heads=2, ffn_dim=768), 8, 256, True),
    ("llama-8L mb4", "tiny", dict(vocab_size=4096, d_model=384, n_layers=8, n_heads=6, ffn_dim=1024), 4, 512, False),
    ("llama-8L mb4 ckpt", "tiny", dict(vocab_size=4096, d_model=384, n_layers=8, n_heads=6, ffn_dim=1024), 4, 512, True),
    ("llama-2L mb16", "tiny", dict(vocab_size=16384, d_model=128, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=384), 16, 128, False),
    ("neox-4L mb8", "pythia-160m", dict(vocab_size=8192, d_model=256, n_layers=4, n_heads=8, ffn_dim=1024), 8, 256, False),
    ("neox-4L mb8 ckpt", "pythia-160m", dict(vocab_size=8192, d_model=256, n_layers=4, n_heads=8, ffn_dim=1024), 8, 256, True),
]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(index: int) -> None:
    import torch

    from wsdlab.models import build_model, model_config
    from wsdlab.models.checkpointing import set_activation_checkpointing
    from wsdlab.models.objective import batch_loss
    from wsdlab.train.config import OptimConfig

    from wsdlab.train.optim import build_optimizer

    torch.set_num_threads(1)
    _, preset, over, micro, seq, ckpt = CONFIGS[index]
    cfg = model_config(preset, seq_len=seq, **over)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    set_activation_checkpointing(model, ckpt)
    opt = build_optimizer(model, OptimConfig(), torch.device("cpu"))
    batches = [torch.randint(0, cfg.vocab_size, (micro, seq + 1)) for _ in range(2)]
    base = _rss()
    start = time.process_time()
    for _ in range(2):
        for batch in batches:
            (batch_loss(model, batch) / 2).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"growth": peak - base, "cpu_s": time.process_time() - start}))


def main() -> None:
    from wsdlab.models import model_config
    from wsdlab.train.memory import estimate_memory
    from wsdlab.train.presets import run_preset

    rows = []
    for i, (name, preset, over, micro, seq, ckpt) in enumerate(CONFIGS):
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, __file__, str(i)], env=env, capture_output=True, text=True, check=True)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        data = run_preset("tiny").model_dump()
        data["model"] = model_config(preset, seq_len=seq, **over).model_dump()
        data["data"].update(seq_len=seq, vocab_size=over["vocab_size"])
        data["train"].update(micro_batch_size=micro, batch_size=2 * micro, activation_checkpointing=ckpt,
                             precision="fp32")
        from wsdlab.train.config import RunSpec

        est = estimate_memory(RunSpec.model_validate(data), 1, "cpu")
        predicted = est.total - est.weights
        rows.append((name, predicted, measured["growth"], est.activations, measured["cpu_s"]))
    print(f"{'config':20s} {'estimate MiB':>12s} {'measured MiB':>12s} {'error':>7s} {'act. MiB':>9s} {'cpu s':>6s}")
    for name, pred, meas, act, cpu in rows:
        print(f"{name:20s} {pred / 2**20:12.1f} {meas / 2**20:12.1f} {(pred - meas) / meas:+7.1%} {act / 2**20:9.1f} {cpu:6.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(int(sys.argv[1]))
    else:
        main()
