"""Study preflight (wsdlab.study.preflight): a missing dataset, corpus, tokenizer or SFT file stops the study
before anything trains, with one error naming the input, the stages that need it and how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsdlab.cli import app
from wsdlab.common.errors import ConfigError
from wsdlab.data import vision
from wsdlab.data.config import DataConfig
from wsdlab.study.executors import SequentialExecutor
from wsdlab.study.preflight import check_inputs
from wsdlab.study.runner import run_study
from wsdlab.train.config import RunSpec
from wsdlab.train.presets import run_preset

from test_study_runner import FakeTrain, study

FMNIST_NAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz"]


def spec_with(**data) -> RunSpec:
    """The micro preset with its data config replaced by `data` (the data config validated as a user's would
    be; the model is left as it is: only the data is checked)."""
    return run_preset("micro").model_copy(update={"data": DataConfig(**data)})


def files(root: Path, names: list[str]) -> Path:
    """Empty files `names` in `root` (only their existence is checked)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(b"")
    return root


def message(specs: dict[str, RunSpec], stage_of: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        check_inputs(specs, stage_of)
    return str(info.value)


def test_present_inputs_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = files(tmp_path, ["tokenizer.json"]) / "tokenizer.json"
    sft = files(tmp_path / "sft", ["train.jsonl"]) / "train.jsonl"
    corpus = files(tmp_path / "corpus", ["a.txt"])
    fmnist = files(tmp_path / "fmnist", [n.removesuffix(".gz") for n in FMNIST_NAMES])  # un-gzipped twins count
    monkeypatch.setenv("WSDLAB_CACHE", str(tmp_path / "cache"))
    files(tmp_path / "cache" / "cifar10" / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    specs = {
        "lm": spec_with(source="text", path=str(corpus), tokenizer="pretrained", tokenizer_path=str(tok),
                        sft={"source": "hf", "hf_name": "json", "path": str(sft)}),
        "fm": spec_with(source="fashion_mnist", path=str(fmnist)),
        "cifar": spec_with(source="cifar10"),
        "hub": spec_with(source="hf", hf_name="no-such/dataset-offline"),  # a hub name is not checked
        "stdlib": spec_with(),
    }
    assert check_inputs(specs, {k: f"stage-{k}" for k in specs}) is None


def test_missing_sft_file(tmp_path: Path) -> None:
    missing = tmp_path / "sft" / "tulu.jsonl"
    specs = {"sft-a": spec_with(sft={"source": "hf", "hf_name": "json", "path": str(missing)}),
             "sft-b": spec_with(sft={"source": "hf", "hf_name": "json", "path": str(missing)})}
    assert message(specs, {"sft-a": "sft", "sft-b": "sft"}) == (
        f"missing input, nothing trained: the SFT data data.sft.path {missing} (not found), needed by stage sft; "
        "to get it: give the json file(s) of prompt/response conversations (field 'messages')")


def test_missing_tokenizer_file(tmp_path: Path) -> None:
    missing = tmp_path / "gpt2" / "tokenizer.json"
    specs = {"lm-0": spec_with(tokenizer="pretrained", tokenizer_path=str(missing))}
    assert message(specs, {"lm-0": "lm-wsd"}) == (
        f"missing input, nothing trained: the tokenizer data.tokenizer_path {missing} (not found), needed by stage "
        "lm-wsd; to get it: give a local tokenizer.json (e.g. GPT-2's or Llama-3's from its Hugging Face repo)")


def test_each_missing_input_once_with_all_its_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fmnist = files(tmp_path / "fmnist", FMNIST_NAMES[1:])  # train images missing
    monkeypatch.setattr(vision, "FASHION_MNIST_DIR", fmnist)
    monkeypatch.setenv("WSDLAB_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "empty-corpus"
    corpus.mkdir()
    specs = {"cnn-0": spec_with(source="fashion_mnist"), "cnn-1": spec_with(source="fashion_mnist"),
             "cd-0": spec_with(source="fashion_mnist"), "c10": spec_with(source="cifar10"),
             "lm": spec_with(source="jsonl", path=str(corpus))}
    stage_of = {"cnn-0": "cnn-wsd", "cnn-1": "cnn-cosine", "cd-0": "cnn-cooldown", "c10": "cifar", "lm": "lm"}
    cifar = tmp_path / "cache" / "cifar10"
    assert message(specs, stage_of).splitlines() == [
        "3 missing inputs, nothing trained:",
        f"Fashion-MNIST (train-images-idx3-ubyte.gz missing in {fmnist}), needed by stages cnn-wsd, cnn-cosine, "
        "cnn-cooldown; to get it: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set data.path to a "
        "folder of its IDX files",
        f"CIFAR-10 (no cifar-10-batches-py/ or -bin/ in {cifar}), needed by stage cifar; to get it: "
        f"`pip install 'torchvision==0.28.*'` then `python -c \"import torchvision; torchvision.datasets.CIFAR10("
        f"'{cifar}', download=True)\"`, or untar cifar-10-python.tar.gz there, or set data.path",
        f"the jsonl corpus data.path {corpus} (no .jsonl/.json files in it), needed by stage lm; to get it: put the "
        "corpus's .jsonl/.json files there",
    ]


def test_run_study_trains_nothing_when_an_input_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "corpus.txt"
    fake = FakeTrain()
    spec = study(base={"preset": "tiny", "overrides": {"train.steps": 10, "data.source": "text", "data.path": str(missing)}})
    with pytest.raises(ConfigError, match=f"data.path {missing} \\(not found\\), needed by stages base, cooldown, "
                                          "reference, hyperparam;"):
        run_study(spec, tmp_path / "study", executor=SequentialExecutor(fake), analyses=False)
    assert fake.calls == [] and not (tmp_path / "study").exists()


def test_universality_quick_without_fashion_mnist_stops_before_training(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    absent = tmp_path / "no-fashion-mnist"
    monkeypatch.setattr(vision, "FASHION_MNIST_DIR", absent)  # as on a machine without dataset-fashion-mnist
    out = tmp_path / "study"
    result = CliRunner().invoke(app, ["study", "run", "universality", "--quick", "--out", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: missing input, nothing trained: Fashion-MNIST (none of its IDX files in {absent}), "
                      "needed by stages cnn-wsd, cnn-cosine, cnn-wso, cnn-cooldown; to get it: `apt-get install "
                      "dataset-fashion-mnist` (Debian/Ubuntu), or set data.path to a folder of its IDX files"]
    assert "Traceback" not in result.output and not out.exists()  # no study folder, so no run folder: nothing trained
