"""Export to a Hugging Face model directory: transformers loads it, its logits and greedy generation match
wsdlab's model, its tokenizer encodes like the run's, and its special tokens, padding, context length and
(for SFT) chat template are the data pipeline's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from wsdlab.common.errors import ConfigError
from wsdlab.data.sft import PROMPT_TEMPLATE, encode_pairs
from wsdlab.data.tokenizer import separator_id, train_bpe
from wsdlab.train import RunSpec, run_preset, train
from wsdlab.train.export import export_hf, special_tokens

transformers = pytest.importorskip("transformers")


def _spec(model: dict | None = None, data: dict | None = None) -> RunSpec:
    spec = run_preset("micro").model_dump()
    spec["model"].update({"vocab_size": 512, "seq_len": 32, "d_model": 32, "n_layers": 2, "n_heads": 4,
                          "n_kv_heads": 2, "ffn_dim": 64, **(model or {})})
    spec["data"].update({"max_documents": 200, "vocab_size": 512, "seq_len": 32, **(data or {})})
    spec["schedule"].update(kind="wso", warmup_steps=1)
    spec["train"].update(steps=3, batch_size=4, eval_every=3, eval_batches=1, snapshot_every=None, progress=False,
                         device="cpu")
    return RunSpec.model_validate(spec)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """Tiny runs trained once per module, by name."""
    made: dict[str, object] = {}

    def get(name: str, **kw: dict):
        if name not in made:
            made[name] = train(_spec(**kw), tmp_path_factory.mktemp(name) / "run")
        return made[name]

    return get


VARIANTS = {  # GQA (4 query heads over 2 key/value heads) in each; head_dim 16 != d_model / n_heads = 8
    "tied": dict(tie_embeddings=True, rope_theta=10000.0),
    "untied": dict(tie_embeddings=False, rope_theta=10000.0),
    "gqa-head-dim": dict(tie_embeddings=False, head_dim=16, n_kv_heads=1),
}


def _greedy(model: torch.nn.Module, ids: torch.Tensor, steps: int, stop: int) -> list[int]:
    """wsdlab's own greedy decoding: argmax of the last position's logits, until `stop` or `steps` tokens."""
    out = ids[0].tolist()
    for _ in range(steps):
        with torch.no_grad():
            nxt = int(model(torch.tensor([out]))[0, -1].argmax())
        out.append(nxt)
        if nxt == stop:
            break
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_loads_in_transformers_and_matches_logits_and_greedy_generation(runs, tmp_path: Path,
                                                                               variant: str) -> None:
    run = runs(variant, model=VARIANTS[variant])
    mcfg = run.spec.model
    out = export_hf(run.checkpoint(3), tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == mcfg.kv_heads
    assert cfg["tie_word_embeddings"] is mcfg.tie_embeddings and cfg["rope_theta"] == mcfg.rope_theta
    assert cfg["head_dim"] == (16 if variant == "gqa-head-dim" else 8)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ours = run.load_model(3)
    ids = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ours(ids)
        got = hf(ids).logits
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
    sep = cfg["eos_token_id"]
    prompt = ids[:1, :8]
    with torch.no_grad():
        generated = hf.generate(prompt, max_new_tokens=12, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert generated[0].tolist() == _greedy(ours, prompt, 12, sep)


def test_exported_tokenizer_encodes_like_the_runs_and_its_specials_are_the_pipelines(runs, tmp_path: Path) -> None:
    from wsdlab.data import load_data

    run = runs("untied", model=VARIANTS["untied"])
    out = export_hf(run.checkpoint(3), tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    bundle = load_data(run.spec.data, progress=False)
    text = "def add(a, b):\n    return a + b\n"
    assert tok(text, add_special_tokens=False)["input_ids"] == bundle.tokenizer.encode(text, add_special_tokens=False).ids
    # the char tokenizer: <unk> is id 0, the separator <|endoftext|> id 1 (data/tokenizer.py)
    assert tok.eos_token == tok.bos_token == tok.pad_token == "<|endoftext|>" and tok.unk_token == "<unk>"
    assert tok.eos_token_id == bundle.separator_id == 1 and tok.unk_token_id == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eos_token_id"] == cfg["bos_token_id"] == cfg["pad_token_id"] == 1


def _eos_tokenizer(path: Path) -> Path:
    """A Llama-2-style tokenizer: <unk> = 0, <s> = 1, </s> = 2 (the end token), then characters."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: 3 + i for i, c in enumerate("abcdefghij ")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.save(str(path))
    return path


def test_special_tokens_come_from_the_pipelines_separator_and_the_real_unknown_token(runs, tmp_path: Path) -> None:
    tok_path = _eos_tokenizer(tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(str(tok_path))
    assert separator_id(tok) == 2  # what the data pipeline puts between documents
    assert special_tokens(tok, tok_path) == {"bos_token": "</s>", "eos_token": "</s>", "pad_token": "</s>",
                                             "unk_token": "<unk>"}
    run = runs("untied", model=VARIANTS["untied"])
    out = export_hf(run.checkpoint(3), tmp_path / "hf", tokenizer=tok_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert (hf_tok.eos_token, hf_tok.eos_token_id, hf_tok.unk_token, hf_tok.unk_token_id) == ("</s>", 2, "<unk>", 0)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    # a byte-level BPE has no unknown token: none is written (not the end token)
    bpe = train_bpe(["hello world " * 20], 260)
    assert special_tokens(bpe, tok_path) == {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                             "pad_token": "<|endoftext|>"}


def test_padding_works_and_padded_logits_match(runs, tmp_path: Path) -> None:
    run = runs("untied", model=VARIANTS["untied"])
    out = export_hf(run.checkpoint(3), tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    batch = tok(["def f(x):", "x"], padding=True, return_tensors="pt")
    short = tok("x", return_tensors="pt")["input_ids"]
    assert batch["input_ids"].shape == (2, 9) and batch["input_ids"][1, 1:].tolist() == [1] * 8  # right-padded with
    assert batch["attention_mask"][1].tolist() == [1] + [0] * 8                                   # the separator
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        padded = hf(**batch).logits
        expected = run.load_model(3)(short)
    torch.testing.assert_close(padded[1, :1], expected[0], atol=2e-5, rtol=1e-5)


def test_context_length_is_the_trained_one(runs, tmp_path: Path) -> None:
    # model.seq_len 64, trained on data.seq_len 32: transformers and lm_eval are told 32
    run = runs("ctx", model={"seq_len": 64}, data={"seq_len": 32})
    out = export_hf(run.checkpoint(3), tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 32
    assert transformers.AutoTokenizer.from_pretrained(str(out)).model_max_length == 32
    gen = transformers.GenerationConfig.from_pretrained(str(out))
    assert (gen.max_length, gen.eos_token_id, gen.pad_token_id, gen.bos_token_id) == (32, 1, 1, 1)


def test_export_refuses_a_tokenizer_bigger_than_the_model(runs, tmp_path: Path) -> None:
    # the run's model has 512 rows; a 600-token tokenizer would fail inside transformers with an IndexError
    big = train_bpe([" ".join(f"w{i}" for i in range(3000))], 600)
    assert max(big.get_vocab().values()) >= 512
    big.save(str(tmp_path / "big.json"))
    run = runs("untied", model=VARIANTS["untied"])
    with pytest.raises(ConfigError, match=r"token ids up to \d+ .*model.vocab_size 512"):
        export_hf(run.checkpoint(3), tmp_path / "hf", tokenizer=tmp_path / "big.json")
    assert not (tmp_path / "hf").exists()


def test_sft_export_ships_the_sft_prompt_format_as_chat_template(runs, tmp_path: Path) -> None:
    from wsdlab.data import load_data

    run = runs("sft", model={"seq_len": 256}, data={"seq_len": 256, "sft": {"source": "stdlib"}})
    out = export_hf(run.checkpoint(3), tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    prompt, response = "Write the Python function `add`: Add two numbers.", "def add(a, b):\n    return a + b"
    chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    # the SFT row, by hand: "<|user|>\n{prompt}\n<|assistant|>\n" + response + separator (data/sft.py)
    row = f"<|user|>\n{prompt}\n<|assistant|>\n{response}<|endoftext|>"
    assert PROMPT_TEMPLATE.format(prompt=prompt) + response + "<|endoftext|>" == row
    assert tok.apply_chat_template(chat, tokenize=False) == row
    assert tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True) == \
        f"<|user|>\n{prompt}\n<|assistant|>\n"
    bundle = load_data(run.spec.data, progress=False)
    tokens, _ = encode_pairs(bundle.tokenizer, [(prompt, response)], 256, bundle.separator_id)
    ids = tok(tok.apply_chat_template(chat, tokenize=False), add_special_tokens=False)["input_ids"]
    assert tokens[0, :len(ids)].tolist() == ids and ids[-1] == bundle.separator_id
    with pytest.raises(Exception, match="only user and assistant"):
        tok.apply_chat_template([{"role": "system", "content": "be brief"}] + chat, tokenize=False)
    # a pre-training export has no chat template (its model never saw the format)
    plain = export_hf(runs("untied", model=VARIANTS["untied"]).checkpoint(3), tmp_path / "plain")
    assert "chat_template" not in json.loads((plain / "tokenizer_config.json").read_text())


def test_export_refuses_an_existing_directory(runs, tmp_path: Path) -> None:
    run = runs("untied", model=VARIANTS["untied"])
    (tmp_path / "hf").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        export_hf(run.checkpoint(3), tmp_path / "hf")
    with pytest.raises(ConfigError, match="out must not be empty"):
        export_hf(run.checkpoint(3), "")


def test_export_of_a_run_folder_says_to_pass_a_checkpoint(runs, tmp_path: Path) -> None:
    run = runs("untied", model=VARIANTS["untied"])
    with pytest.raises(ConfigError, match=r"is a run folder, not a checkpoint; pass .*checkpoints/<step> \(it has steps 0, 3\)"):
        export_hf(run.path, tmp_path / "hf")
    with pytest.raises(ConfigError, match=r"is a run folder, not a checkpoint; pass .*checkpoints/<step>"):
        export_hf(run.path / "checkpoints", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_cli_export_writes_the_directory(runs, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wsdlab.cli import app

    run = runs("untied", model=VARIANTS["untied"])
    result = CliRunner().invoke(app, ["export", str(run.checkpoint(3)), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "hf").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                            "tokenizer_config.json", "generation_config.json"}
    again = CliRunner().invoke(app, ["export", str(run.checkpoint(3)), str(tmp_path / "hf")])
    assert again.exit_code == 2 and "already exists" in again.output
    empty = CliRunner().invoke(app, ["export", str(run.checkpoint(3)), ""])
    assert empty.exit_code == 2 and "'OUT'" in empty.output and "must not be empty" in empty.output, empty.output
    folder = CliRunner().invoke(app, ["export", str(run.path), str(tmp_path / "hf2")])
    assert folder.exit_code == 2 and "checkpoints/<step>" in folder.output, folder.output
