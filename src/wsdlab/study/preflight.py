"""Before a study trains: check that every run's data and tokenizer exist, so a missing dataset stops the
study at once with one line saying what is missing, which stages need it and how to get it, instead of
failing each of its runs with a traceback after the others trained.

Only the existence of inputs is checked (files and folders, nothing is read, prepared or tokenized):
- image datasets: Fashion-MNIST's four IDX files (`data.path`, else Debian's dataset-fashion-mnist folder),
  CIFAR-10's batches (`data.path`, else `<cache>/cifar10`);
- a local corpus (`data.path` of a text/jsonl/parquet source, or of a local Hugging Face builder);
- a pretrained tokenizer's file (`data.tokenizer_path`);
- SFT data files the user gave (`data.sft.path`).
Not checked: a Hugging Face hub dataset (corpus or SFT) by name. Whether it loads offline depends on
the Hugging Face cache and on the network, which only loading it tells; it fails when the corpus is
prepared (DataUnavailableError), before its run trains. The standard-library corpus always exists.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wsdlab.common.errors import ConfigError
from wsdlab.data.config import DataConfig
from wsdlab.train.config import RunSpec

LOCAL_SUFFIXES = {"text": (".txt",), "jsonl": (".jsonl", ".json"), "parquet": (".parquet",)}


@dataclass(frozen=True)
class MissingInput:
    """One input that is not there: `what` names it (with its path), `how` says how to get it."""

    what: str
    how: str


def _shown(path: str | Path) -> Path:
    """A user's path as the message shows it: absolute, so a relative one says where it was looked for."""
    return Path(path).expanduser().absolute()


def _exists(path: str) -> bool:
    """Whether a user's path (or glob pattern, as Hugging Face data_files accept) names something."""
    expanded = str(Path(path).expanduser())
    return bool(glob.glob(expanded)) if any(c in expanded for c in "*?[") else Path(expanded).exists()


def _image_inputs(cfg: DataConfig) -> list[MissingInput]:
    from wsdlab.data.shards import cache_root
    from wsdlab.data.vision import (FASHION_MNIST_FILES, cifar10_dir, fashion_mnist_dir, find_cifar10,
                                    missing_fashion_mnist)

    if cfg.source == "fashion_mnist":
        root = _shown(fashion_mnist_dir(cfg.path))
        missing = missing_fashion_mnist(root)
        if not missing:
            return []
        total = sum(len(pair) for pair in FASHION_MNIST_FILES.values())
        files = "none of its IDX files" if len(missing) == total else ", ".join(p.name for p in missing) + " missing"
        if cfg.path:
            how = (f"put {', '.join(n for pair in FASHION_MNIST_FILES.values() for n in pair)} in {root}, or drop "
                   "data.path and `apt-get install dataset-fashion-mnist`")
        else:
            how = "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set data.path to a folder of its IDX files"
        return [MissingInput(f"Fashion-MNIST ({files} in {root})", how)]
    directory = _shown(cifar10_dir(cfg, cache_root(cfg)))
    if find_cifar10(directory) is not None:
        return []
    how = (f"`pip install 'torchvision==0.28.*'` then `python -c \"import torchvision; "
           f"torchvision.datasets.CIFAR10('{directory}', download=True)\"`, or untar cifar-10-python.tar.gz there, "
           "or set data.path")
    return [MissingInput(f"CIFAR-10 (no cifar-10-batches-py/ or -bin/ in {directory})", how)]


def _corpus_inputs(cfg: DataConfig) -> list[MissingInput]:
    from wsdlab.data.sources import LOCAL_BUILDERS

    out: list[MissingInput] = []
    if cfg.path and cfg.source in LOCAL_SUFFIXES:
        root = _shown(cfg.path)
        suffixes = LOCAL_SUFFIXES[cfg.source]
        if not root.exists():
            out.append(MissingInput(f"the {cfg.source} corpus data.path {root} (not found)",
                                    f"give an existing {'/'.join(suffixes)} file or a folder of them"))
        elif root.is_dir() and not any(p.is_file() and p.name.endswith(suffixes) for p in root.rglob("*")):
            out.append(MissingInput(f"the {cfg.source} corpus data.path {root} (no {'/'.join(suffixes)} files in it)",
                                    f"put the corpus's {'/'.join(suffixes)} files there"))
    elif cfg.path and cfg.source == "hf" and not _exists(cfg.path):
        out.append(MissingInput(f"the data files of Hugging Face builder '{cfg.hf_name}', data.path "
                                f"{_shown(cfg.path)} (not found)", "give an existing file or folder"))
    elif cfg.source == "hf" and cfg.hf_name in LOCAL_BUILDERS and not cfg.path:
        out.append(MissingInput(f"the data files of Hugging Face builder '{cfg.hf_name}' (no data.path)",
                                "set data.path to its file or folder"))
    if cfg.tokenizer == "pretrained" and cfg.tokenizer_path and not Path(cfg.tokenizer_path).expanduser().is_file():
        out.append(MissingInput(f"the tokenizer data.tokenizer_path {_shown(cfg.tokenizer_path)} (not found)",
                                "give a local tokenizer.json (e.g. GPT-2's or Llama-3's from its Hugging Face repo)"))
    if cfg.sft is not None and cfg.sft.source == "hf" and cfg.sft.path and not _exists(cfg.sft.path):
        out.append(MissingInput(f"the SFT data data.sft.path {_shown(cfg.sft.path)} (not found)",
                                f"give the {cfg.sft.hf_name} file(s) of prompt/response conversations "
                                f"(field '{cfg.sft.messages_field}')"))
    return out


def missing_inputs(cfg: DataConfig) -> list[MissingInput]:
    """The inputs of a run's data config that do not exist here (see the module docstring for what is checked)."""
    return _image_inputs(cfg) if cfg.is_vision else _corpus_inputs(cfg)


def check_inputs(specs: Mapping[str, RunSpec], stage_of: Mapping[str, str]) -> None:
    """Raise one ConfigError listing every missing input of the runs `specs` (run key -> spec), each with the
    stages (`stage_of`: run key -> stage) that need it and how to get it; nothing when all exist.

    Each distinct data config is checked once (the runs of a grid share theirs)."""
    stages: dict[MissingInput, list[str]] = {}
    checked: dict[str, list[MissingInput]] = {}
    for key, spec in specs.items():
        config = spec.data.model_dump_json()
        if config not in checked:
            checked[config] = missing_inputs(spec.data)
        for item in checked[config]:
            names = stages.setdefault(item, [])
            stage = stage_of.get(key, key)
            if stage not in names:
                names.append(stage)
    if not stages:
        return
    lines = [f"{item.what}, needed by stage{'s' if len(names) > 1 else ''} {', '.join(names)}; to get it: {item.how}"
             for item, names in stages.items()]
    if len(lines) == 1:
        raise ConfigError(f"missing input, nothing trained: {lines[0]}")
    raise ConfigError(f"{len(lines)} missing inputs, nothing trained:\n" + "\n".join(lines))
