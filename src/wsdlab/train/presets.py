"""Named run specs: the embedded CPU default (`tiny`), a seconds-long test run (`micro`), and the
papers' stable-phase settings. Each preset is the *stable phase* (schedule kind "wso"): cooldowns
branch from its checkpoints with `branch_spec` / `wsdlab cooldown`.

Paper settings (from our reading of the papers; numbers we could not pin down are marked "~"):
- 60M, 210M (Dremov et al., cooldown dynamics; Hägele et al. 2024 codebase): SlimPajama, seq 512,
  AdamW (0.9, 0.95), wd 0.1, clip 1.0, lr 1e-3, ~batch 256 sequences (131k tokens), ~300 warmup steps.
- 1B, 8B (WSO paper, Table 6 as printed): 80,000 steps, batch 4,194,304 tokens (1B) / 12,582,912 (8B),
  sequence 2,048, AdamW lr 3e-4, beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1, clipping 1.0, warmup
  1,000 steps, WSD stable ratio rho 0.75 (used when schedule.kind is wsd), bfloat16, FSDP; FineWeb-Edu.
  Ours add activation checkpointing per block (train.activation_checkpointing), which halves the memory of a
  GPU (`wsdlab.train.memory`, 8-way FSDP: 1B ~59 -> ~31 GiB at micro batch 8, 8B ~56 -> ~29 GiB at 2).
  "We use the Llama 3 tokenizer with a vocabulary size of 128,256 tokens" (App. A): its tokenizer.json is
  read from $WSDLAB_LLAMA3_TOKENIZER when set (no hub offline), else our byte-level BPE of that size.
- pythia-160m, as the universality paper (001, App. A) trained it: "approximately 3 billion tokens from
  the cerebras/SlimPajama-627B HF dataset [...] a batch size of 256 and a sequence length of 2048":
  5722 steps x 256 x 2048 = 3.0B tokens; lr 6e-4, wd 0.01 and warmup 1% (57 steps) are Pythia's (~,
  the paper does not give them). Its WSD cooldown is "20% of the total steps"
  (PAPER_COOLDOWN_FRACTION; a study sets schedule.kind wsd with it).
- cnn / cnn-fmnist (universality study): CIFAR-10 / Fashion-MNIST, "a batch size of 128", "about 50
  epochs" (50 x 50,000 / 128 = 19,531 steps; Fashion-MNIST 50 x 60,000 / 128 = 23,438), lr 1e-3 (~),
  no data augmentation (wsdlab has none); WSD cooldown 35% ("a longer decay (35%) is needed").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from wsdlab.common.errors import ConfigError
from wsdlab.data.config import DataConfig
from wsdlab.models import model_config
from wsdlab.schedules.config import ScheduleConfig
from wsdlab.train.config import OptimConfig, RunSpec, TrainConfig


def _tiny() -> RunSpec:
    data = DataConfig()
    return RunSpec(
        name="tiny",
        model=model_config("tiny", vocab_size=data.vocab_size, seq_len=data.seq_len),
        data=data,
        optim=OptimConfig(lr=3e-3),
        schedule=ScheduleConfig(kind="wso", warmup_steps=40),
        train=TrainConfig(steps=400, batch_size=16, checkpoint_every=100, eval_every=50, eval_batches=8,
                          snapshot_every=20),
    )


def _micro() -> RunSpec:
    data = DataConfig(tokenizer="char", vocab_size=32, seq_len=16, max_documents=40)
    return RunSpec(
        name="micro",
        model=model_config("micro", vocab_size=data.vocab_size, seq_len=data.seq_len),
        data=data,
        optim=OptimConfig(lr=3e-2, weight_decay=0.0),
        schedule=ScheduleConfig(kind="wso", warmup_steps=4),
        train=TrainConfig(steps=40, batch_size=8, checkpoint_every=10, eval_every=10, eval_batches=2,
                          snapshot_every=5, progress=False),
    )


def _lm(name: str, model: str, data: DataConfig, optim: OptimConfig, warmup: int, **train: Any) -> RunSpec:
    return RunSpec(
        name=name,
        model=model_config(model, seq_len=max(data.seq_len, model_config(model).seq_len)),
        data=data,
        optim=optim,
        schedule=ScheduleConfig(kind="wso", warmup_steps=warmup),
        train=TrainConfig(**train),
    )


def _slimpajama(seq_len: int) -> DataConfig:
    return DataConfig(source="hf", hf_name="DKYoon/SlimPajama-6B", streaming=True, vocab_size=50304, seq_len=seq_len)


LLAMA3_TOKENIZER_ENV = "WSDLAB_LLAMA3_TOKENIZER"  # a local Llama 3 tokenizer.json (App. A)


def _fineweb(seq_len: int, llama3_tokenizer: bool = False) -> DataConfig:
    path = os.environ.get(LLAMA3_TOKENIZER_ENV) if llama3_tokenizer else None
    tok: dict[str, Any] = {"tokenizer": "pretrained", "tokenizer_path": path} if path else {}
    return DataConfig(source="hf", hf_name="HuggingFaceFW/fineweb-edu", hf_config="sample-10BT", streaming=True,
                      vocab_size=128256, seq_len=seq_len, **tok)


def _60m() -> RunSpec:
    return _lm("60M", "60M", _slimpajama(512), OptimConfig(lr=1e-3), 300, steps=20_000, batch_size=256,
               micro_batch_size=64, eval_every=500, eval_batches=32, checkpoint_every=2000, snapshot_every=500)


def _210m() -> RunSpec:
    return _lm("210M", "210M", _slimpajama(512), OptimConfig(lr=1e-3), 300, steps=40_000, batch_size=256,
               micro_batch_size=32, eval_every=1000, eval_batches=32, checkpoint_every=4000, snapshot_every=1000)


def _wso_paper(name: str, batch_tokens: int, micro_batch_size: int) -> RunSpec:
    """Table 6 (WSO paper): the 1B / 8B pre-training settings; checkpoints every 4,000 steps (App. H's sharpness)."""
    spec = _lm(name, name, _fineweb(2048, llama3_tokenizer=True),
               OptimConfig(lr=3e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0), 1000,
               steps=80_000, batch_tokens=batch_tokens, micro_batch_size=micro_batch_size, eval_every=1000,
               eval_batches=16, checkpoint_every=4000, precision="bf16", fsdp=True,
               activation_checkpointing=True)
    return spec.model_copy(update={"schedule": spec.schedule.model_copy(update={"stable_ratio": 0.75})})


def _1b() -> RunSpec:
    return _wso_paper("1B", 4_194_304, 8)


def _8b() -> RunSpec:
    return _wso_paper("8B", 12_582_912, 2)


# The universality paper's WSD cooldown per preset: "a cooldown length of 20% of the total steps" (LM),
# "On CNN instead, a longer decay (35%)" (001, App. A). Presets are stable phases (wso); studies use these.
PAPER_COOLDOWN_FRACTION = {"pythia-160m": 0.2, "cnn": 0.35, "cnn-fmnist": 0.35}
PAPER_CNN_EPOCHS = 50  # "specifically training it for about 50 epochs"


def _pythia() -> RunSpec:
    data = DataConfig(source="hf", hf_name="cerebras/SlimPajama-627B", streaming=True, vocab_size=50304,
                      seq_len=2048)
    return _lm("pythia-160m", "pythia-160m", data, OptimConfig(lr=6e-4, weight_decay=0.01), 57, steps=5722,
               batch_size=256, micro_batch_size=32, eval_every=200, eval_batches=16, checkpoint_every=1000,
               snapshot_every=100)


def _cnn_steps(train_images: int, batch: int = 128, epochs: int = PAPER_CNN_EPOCHS) -> int:
    return round(epochs * train_images / batch)


def _cnn(name: str, source: str) -> RunSpec:
    return RunSpec(
        name=name,
        model=model_config(name),
        data=DataConfig(source=source),  # type: ignore[arg-type]
        optim=OptimConfig(lr=1e-3, weight_decay=0.05),
        schedule=ScheduleConfig(kind="wso", warmup_steps=200),
        train=TrainConfig(steps=_cnn_steps(50_000 if source == "cifar10" else 60_000), batch_size=128, eval_every=200, eval_batches=20, checkpoint_every=1000,
                          snapshot_every=100),
    )


RUN_PRESETS: dict[str, Callable[[], RunSpec]] = {
    "tiny": _tiny,
    "micro": _micro,
    "60M": _60m,
    "210M": _210m,
    "1B": _1b,
    "8B": _8b,
    "pythia-160m": _pythia,
    "cnn": lambda: _cnn("cnn", "cifar10"),
    "cnn-fmnist": lambda: _cnn("cnn-fmnist", "fashion_mnist"),
}


def run_preset(name: str) -> RunSpec:
    """A fresh RunSpec of preset `name`; ValueError listing the presets when unknown."""
    if name not in RUN_PRESETS:
        raise ConfigError(f"unknown preset '{name}'; known: {', '.join(RUN_PRESETS)}")
    return RUN_PRESETS[name]()
