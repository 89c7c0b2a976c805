"""`pip install 'wsdlab[eval]'` installs what `lm_eval --model hf` imports, and lm-evaluation-harness's HF
model loads an export and scores it as wsdlab's own multiple-choice scorer does.

The lm_eval tests run where the `eval` extra is installed (skipped under `.[test]` alone); the pyproject
test always runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# lm-eval 0.4.13's `hf` extra (its METADATA: `Requires-Dist: ...; extra == "hf"`); lm_eval/models/huggingface.py
# imports transformers and accelerate at module level and peft for `peft=` adapters.
LM_EVAL_HF_EXTRA = ("transformers", "torch", "accelerate", "peft")


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string ('lm-eval[hf]>=0.4' -> 'lm-eval')."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def test_eval_extra_installs_what_lm_eval_hf_needs() -> None:
    project = _project()
    extra = project["optional-dependencies"]["eval"]
    installed = {_name(r) for r in extra} | {_name(r) for r in project["dependencies"]}
    assert any(_name(r) == "lm-eval" and "[hf]" in r.replace(" ", "") for r in extra), extra
    assert set(LM_EVAL_HF_EXTRA) <= installed, sorted(set(LM_EVAL_HF_EXTRA) - installed)


def test_eval_extra_covers_the_installed_lm_evals_hf_extra() -> None:
    from importlib import metadata

    try:
        requires = metadata.requires("lm_eval") or []
    except metadata.PackageNotFoundError:
        pytest.skip("lm_eval is not installed (pip install 'wsdlab[eval]')")
    hf = {_name(r) for r in requires if re.search(r"""extra\s*==\s*["']hf["']""", r)}
    project = _project()
    installed = {_name(r) for r in project["optional-dependencies"]["eval"]} | {_name(r) for r in project["dependencies"]}
    assert hf and hf <= installed, sorted(hf - installed)


def _export(tmp_path: Path, **data: object) -> tuple[object, Path]:
    from wsdlab.train import RunSpec, run_preset, train
    from wsdlab.train.export import export_hf

    spec = run_preset("micro").model_dump()
    spec["model"].update(vocab_size=512, seq_len=data.get("seq_len", 32), d_model=32, n_layers=2, n_heads=4,
                         n_kv_heads=2, ffn_dim=64)
    spec["data"].update({"max_documents": 200, "vocab_size": 512, "seq_len": 32, **data})
    spec["schedule"].update(kind="wso", warmup_steps=1)
    spec["train"].update(steps=3, batch_size=4, eval_every=3, eval_batches=1, snapshot_every=None, progress=False,
                         device="cpu")
    run = train(RunSpec.model_validate(spec), tmp_path / "run")
    return run, export_hf(run.checkpoint(3), tmp_path / "hf")


def test_lm_eval_hf_model_scores_an_export_like_wsdlabs_scorer(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    huggingface = pytest.importorskip("lm_eval.models.huggingface")  # what `lm_eval --model hf` imports
    from lm_eval.api.instance import Instance

    from wsdlab.analysis.multiple_choice import continuation_logprobs
    from wsdlab.data import load_data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run, out = _export(tmp_path)
    lm = huggingface.HFLM(pretrained=str(out), device="cpu", batch_size=1, dtype="float32")
    assert lm.max_length == 32 and lm.eot_token_id == 1
    context, choices = "# Add two numbers.\ndef", [" add(", " sub(", " mul("]
    requests = [Instance("loglikelihood", {}, (context, c), i) for i, c in enumerate(choices)]
    got = [ll for ll, _ in lm.loglikelihood(requests)]
    tok = load_data(run.spec.data, progress=False).tokenizer
    expected = continuation_logprobs(run.load_model(3), tok, context, choices, 32)
    assert got == pytest.approx(expected, abs=1e-4)
    assert torch.tensor(got).argmax() == torch.tensor(expected).argmax()


def test_lm_eval_applies_the_sft_chat_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huggingface = pytest.importorskip("lm_eval.models.huggingface")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, out = _export(tmp_path, seq_len=256, sft={"source": "stdlib"})
    lm = huggingface.HFLM(pretrained=str(out), device="cpu", batch_size=1, dtype="float32")
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Say hi."}]
    # the system turn is refused by the template; lm_eval then drops it (its documented fallback)
    assert lm.apply_chat_template(chat) == "<|user|>\nSay hi.\n<|assistant|>\n"
