"""Supervised fine-tuning: the offline instruction set (held out by module), masked batches and loss,
and a `restart` branch whose cosine schedule warms up from its own start (WSO paper, Table 8)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from wsdlab.common.types import MaskedBatch
from wsdlab.data import DataConfig, load_data
from wsdlab.data.sft import (
    PROMPT_TEMPLATE,
    encode_pairs,
    held_out_documents,
    split_pairs,
    stdlib_pairs,
)
from wsdlab.data.shards import split_documents
from wsdlab.data.sources import iter_documents
from wsdlab.models import batch_loss, build_model, model_config
from wsdlab.train import RunSpec, branch_from_checkpoint, evaluate_metrics, train

CORPUS = dict(source="stdlib", max_documents=300, vocab_size=512, seq_len=64)


def test_instruction_set_comes_from_held_out_modules_only() -> None:
    cfg = DataConfig(**CORPUS)
    docs = list(iter_documents(cfg))
    _, val_ids = split_documents(len(docs), cfg.val_fraction, cfg.split_seed)
    held = held_out_documents(cfg)
    assert sorted(held) == sorted(docs[i] for i in val_ids)
    pairs = stdlib_pairs(held)
    assert len(pairs) >= 10
    for prompt, response in pairs[:20]:  # every response is text of a held-out module
        assert any(response.splitlines()[0].strip() in d for d in held)


def test_stdlib_pairs_by_hand() -> None:
    source = 'def add(a, b):\n    """Add two numbers.\n\n    More text."""\n    return a + b\n'
    assert stdlib_pairs([source]) == [
        ("Write the Python function `add`: Add two numbers.", "def add(a, b):\n    return a + b"),
        ("Write the docstring of this function:\ndef add(a, b):\n    return a + b", "Add two numbers."),
    ]


def test_split_is_nine_to_one_and_disjoint() -> None:
    train_ids, val_ids = split_pairs(100, 0.1, 0)
    assert len(train_ids) == 90 and len(val_ids) == 10 and not set(train_ids) & set(val_ids)


def test_mask_covers_the_response_and_the_closing_separator() -> None:
    bundle = load_data(DataConfig(**CORPUS, sft={"source": "stdlib"}), progress=False)
    tok, sep = bundle.tokenizer, bundle.separator_id
    tokens, mask = encode_pairs(tok, [("say hi", "hi there")], 64, sep)
    p = tok.encode(PROMPT_TEMPLATE.format(prompt="say hi"), add_special_tokens=False).ids
    r = tok.encode("hi there", add_special_tokens=False).ids
    assert tokens[0, :len(p) + len(r) + 1].tolist() == p + r + [sep]
    scored = tokens[0, 1:][mask[0] > 0].tolist()
    assert scored == r + [sep] and mask[0].sum() == len(r) + 1
    batch = bundle.train_batch(np.array([0, 1]))
    assert isinstance(batch, MaskedBatch) and batch.tokens.shape == (2, 65) and batch.mask.shape == (2, 64)


def test_masked_loss_is_the_mean_over_response_tokens() -> None:
    torch.manual_seed(0)
    model = build_model(model_config("tiny", vocab_size=50, seq_len=8, d_model=16, n_layers=1, n_heads=2,
                                     n_kv_heads=1, ffn_dim=32))
    tokens = torch.randint(0, 50, (2, 9))
    mask = torch.zeros(2, 8)
    mask[0, 3:6] = 1
    mask[1, 7] = 1
    logits = model(tokens[:, :-1])
    ce = F.cross_entropy(logits.reshape(-1, 50), tokens[:, 1:].reshape(-1), reduction="none").view(2, 8)
    expected = (ce[0, 3:6].sum() + ce[1, 7]) / 4
    torch.testing.assert_close(batch_loss(model, MaskedBatch((tokens, mask))), expected)


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory):
    spec = RunSpec.model_validate({
        "model": {"preset": "tiny", "vocab_size": 512, "seq_len": 64, "d_model": 32, "n_layers": 2, "n_heads": 2,
                  "n_kv_heads": 1, "ffn_dim": 64},
        "data": CORPUS, "schedule": {"kind": "wso", "warmup_steps": 2},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 4, "eval_batches": 1, "progress": False, "device": "cpu"},
    })
    return train(spec, tmp_path_factory.mktemp("pt"))


def test_sft_branch_restarts_warmup_and_reads_masked_pairs(parent, tmp_path: Path) -> None:
    spec = branch_from_checkpoint(parent.checkpoint(4), steps=6, mode="restart", reset_optimizer=True,
                       schedule={"kind": "cosine", "warmup_steps": 2}, data={"sft": {"source": "stdlib"}},
                       overrides={"optim.lr": 1e-3, "optim.weight_decay": 0.0, "train.batch_size": 4})
    assert spec.schedule.start_step == 4 and spec.train.steps == 10 and spec.data.sft is not None
    run = train(spec, tmp_path / "sft")
    lrs = [r["lr"] for r in run.metrics() if "lr" in r]
    # cosine with warmup 2 from the branch's start (Table 8), minimum LR 0: steps 5..10 see t - 4 = 1..6
    expected = [1e-3 * f for f in (0.5, 1.0, 0.5 * (1 + math.cos(math.pi * 1 / 4)), 0.5,
                                   0.5 * (1 + math.cos(math.pi * 3 / 4)), 0.0)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert run.eval_rows()[-1]["val_loss"] > 0


def test_sft_branch_accumulates_like_the_full_batch(parent, tmp_path: Path) -> None:
    # responses have very unequal lengths: every response token of the global batch must weigh the same
    def branch(micro_batch_size: int | None):
        spec = branch_from_checkpoint(parent.checkpoint(4), steps=2, mode="restart", reset_optimizer=True,
                           schedule={"kind": "cosine", "warmup_steps": 0}, data={"sft": {"source": "stdlib"}},
                           overrides={"optim.lr": 1e-3, "train.batch_size": 4,
                                      "train.micro_batch_size": micro_batch_size})
        return train(spec, tmp_path / str(micro_batch_size))

    full, accum = branch(None), branch(1)
    a, b = load_file(full.checkpoint(6) / "model.safetensors"), load_file(accum.checkpoint(6) / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in accum.metrics()] == pytest.approx([r["loss"] for r in full.metrics()], rel=1e-5)
    assert [r["val_loss"] for r in accum.eval_rows()] == pytest.approx(  # the same val set
        [r["val_loss"] for r in full.eval_rows()], rel=1e-5)


def test_masked_val_loss_is_the_mean_over_response_tokens_of_the_set() -> None:
    torch.manual_seed(0)
    model = build_model(model_config("tiny", vocab_size=50, seq_len=8, d_model=16, n_layers=1, n_heads=2,
                                     n_kv_heads=1, ffn_dim=32)).double()
    tokens = torch.randint(0, 50, (5, 9))
    mask = torch.zeros(5, 8)
    for b, n in enumerate([8, 1, 3, 1, 6]):  # response lengths
        mask[b, 8 - n:] = 1

    class Val:
        num_val = 5

        def val_batch(self, idx: np.ndarray) -> MaskedBatch:
            return MaskedBatch((tokens[torch.as_tensor(idx)], mask[torch.as_tensor(idx)]))

    with torch.no_grad():
        ce = F.cross_entropy(model(tokens[:, :-1]).reshape(-1, 50), tokens[:, 1:].reshape(-1), reduction="none")
    expected = float((ce.view(5, 8) * mask.double()).sum() / 19)
    for chunk_size in (1, 2, None):
        val = evaluate_metrics(model, Val(), 1, 5, "cpu", chunk_size=chunk_size)
        assert val == {"val_loss": pytest.approx(expected, rel=1e-12)}


def test_sft_with_a_pretrained_tokenizer_prepares_no_corpus(tmp_path: Path) -> None:
    # a pretrained tokenizer.json (Llama 3 at scale) is read directly; the corpus is never tokenized
    corpus = load_data(DataConfig(**CORPUS), progress=False)
    tok_path = corpus.directory / "tokenizer.json"
    cfg = DataConfig(source="stdlib", max_documents=300, tokenizer="pretrained", tokenizer_path=str(tok_path),
                     seq_len=64, cache_dir=str(tmp_path / "cache"), sft={"source": "stdlib"})
    bundle = load_data(cfg, progress=False)
    assert bundle.num_train > 0 and bundle.directory is None and not (tmp_path / "cache").exists()


def test_hf_chat_dataset_pairs_from_local_files(tmp_path: Path) -> None:
    # the Tulu-3 layout (messages: [{role, content}, ...]) through the datasets library, on a local JSONL file
    import json

    rows = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(20)]
    rows.append({"messages": [{"role": "user", "content": "no answer"}]})
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DataConfig(**CORPUS, sft={"source": "hf", "hf_name": "json", "path": str(path)})
    bundle = load_data(cfg, progress=False)
    assert bundle.num_train + bundle.num_val == 20 and bundle.num_val == 2
    batch = bundle.val_batch(np.array([0]))
    assert bundle.decode(batch.tokens[0, 1:][batch.mask[0] > 0]).startswith("a")


def test_unreachable_hub_sft_dataset_is_a_data_unavailable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsdlab.common.errors import DataUnavailableError

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    cfg = DataConfig(**CORPUS, sft={"source": "hf", "hf_name": "allenai/tulu-3-sft-mixture-not-cached"})
    with pytest.raises(DataUnavailableError, match="data.sft.hf_name"):
        load_data(cfg, progress=False)


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe binary \x89PNG\r\n", b'{"messages": [}\n'])
def test_bad_local_sft_file_is_a_config_error_naming_it(tmp_path: Path, content: bytes) -> None:
    # an empty file (datasets raised StopIteration), a binary or a malformed one: one ConfigError naming the file
    from wsdlab.common.errors import ConfigError
    from wsdlab.data.config import SFTDataConfig
    from wsdlab.data.sft import hf_pairs

    path = tmp_path / "sft.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"data\.sft\.path: .*sft\.jsonl: not a readable json file"):
        hf_pairs(SFTDataConfig(source="hf", hf_name="json", path=str(path)), cache_dir=tmp_path / "hf")
