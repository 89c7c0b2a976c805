"""Supervised fine-tuning data: prompt/response pairs in a chat template, one pair per row, with a loss mask.

WSO paper, App. D / Table 8: full-parameter SFT on the Tulu-3 SFT mixture, "a 9:1 ratio for training and
validation", batch 128, one epoch; the loss is on response tokens only. Offline, the embedded default is an
instruction set built from the standard-library corpus, held out by module: only the functions of the
corpus's *validation* documents (modules the pre-training split never contains) become pairs:
docstring -> function ("Write the Python function `name` ..."), function -> docstring; every 4th
held-out module is kept apart for the downstream multiple-choice task (`eval_documents`).

A row is `PROMPT_TEMPLATE.format(prompt) + response + <|endoftext|>`, tokenized with the corpus's own
tokenizer, cut to seq_len + 1 tokens and padded with the separator; its mask (over the seq_len targets)
is 1 on the response tokens and the closing separator, 0 on the prompt and the padding.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from wsdlab.common.errors import ConfigError, DataUnavailableError
from wsdlab.common.types import MaskedBatch
from wsdlab.data.config import DataConfig, SFTDataConfig
from wsdlab.data.shards import (
    TOKENIZER_FILE,
    prepare_corpus,
    read_meta,
    split_documents,
)

PROMPT_TEMPLATE = "<|user|>\n{prompt}\n<|assistant|>\n"  # the chat template (a plain-text one: any tokenizer)
Pair = tuple[str, str]  # (prompt, response)
MAX_FUNCTION_CHARS = 1500


def _functions(source: str) -> Iterator[tuple[str, str, str, str]]:
    """(name, signature, docstring summary, source without the docstring) of each documented public function."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    lines = source.splitlines()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        if not doc or len(doc) < 10 or not node.body or node.end_lineno is None:
            continue
        first = node.body[0]
        body = node.body[1:]
        if not body or first.end_lineno is None or body[0].lineno <= first.end_lineno:
            continue
        head = lines[node.lineno - 1:first.lineno - 1]  # def line(s) up to the docstring
        rest = lines[first.end_lineno:node.end_lineno]
        code = textwrap.dedent("\n".join(head + rest))
        if not head or len(code) > MAX_FUNCTION_CHARS:
            continue
        signature = textwrap.dedent("\n".join(head)).strip()
        summary = doc.strip().split("\n\n")[0].strip()  # the docstring's first paragraph
        yield node.name, signature, summary, code


def stdlib_pairs(documents: list[str]) -> list[Pair]:
    """The offline instruction set of `documents` (held-out modules): two pairs per documented function."""
    pairs: list[Pair] = []
    for source in documents:
        for name, signature, doc, code in _functions(source):
            pairs.append((f"Write the Python function `{name}`: {doc}", code))
            pairs.append((f"Write the docstring of this function:\n{code}", doc))
    return pairs


def held_out_documents(cfg: DataConfig) -> list[str]:
    """The corpus's validation documents (split by document, as `prepare_corpus` splits them)."""
    from wsdlab.data.sources import iter_documents

    docs = list(iter_documents(cfg))
    _, val_ids = split_documents(len(docs), cfg.val_fraction, cfg.split_seed)
    return [docs[i] for i in sorted(val_ids.tolist())]


EVAL_EVERY = 4  # every 4th held-out module is kept for the multiple-choice task, the others give SFT pairs


def sft_documents(cfg: DataConfig) -> list[str]:
    """Held-out modules that give the SFT pairs (all but every EVAL_EVERY-th)."""
    return [d for i, d in enumerate(held_out_documents(cfg)) if i % EVAL_EVERY != EVAL_EVERY - 1]


def eval_documents(cfg: DataConfig) -> list[str]:
    """Held-out modules kept for downstream evaluation: neither pre-training nor SFT reads them."""
    return [d for i, d in enumerate(held_out_documents(cfg)) if i % EVAL_EVERY == EVAL_EVERY - 1]


def hf_pairs(sft: SFTDataConfig, cache_dir: Path | None = None) -> list[Pair]:
    """(first user turn, next assistant turn) of each record of a Hugging Face chat dataset."""
    import datasets

    from wsdlab.data.sources import _is_unreachable

    kwargs: dict[str, Any] = {"split": sft.hf_split, "cache_dir": None if cache_dir is None else str(cache_dir)}
    if sft.path:
        kwargs["data_files"] = str(Path(sft.path).expanduser())
    try:
        ds = datasets.load_dataset(sft.hf_name, sft.hf_config, **kwargs)
    except Exception as err:
        if _is_unreachable(err) and not sft.path:
            raise DataUnavailableError(
                f"data.sft.hf_name: dataset '{sft.hf_name}' cannot be loaded here ({type(err).__name__}); without "
                "network only cached datasets load: use data.sft.source: stdlib") from None
        if sft.path and not isinstance(err, OSError):  # a file the user gave: empty (StopIteration), malformed, binary
            raise ConfigError(f"data.sft.path: {kwargs['data_files']}: not a readable {sft.hf_name} file "
                              f"({_reason(err)})") from None
        raise
    pairs: list[Pair] = []
    for record in ds:
        messages = record.get(sft.messages_field) or []
        user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
        if user is None:
            continue
        reply = next((m for m in messages[user + 1:] if m.get("role") == "assistant"), None)
        if reply is not None:
            pairs.append((str(messages[user]["content"]), str(reply["content"])))
        if sft.max_examples is not None and len(pairs) >= sft.max_examples:
            break
    return pairs


def _reason(err: BaseException) -> str:
    """The datasets library's error in a few words: its innermost cause (e.g. pyarrow's JSON parse error)."""
    while err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, StopIteration):
        return "no rows: the file is empty"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def encode_pairs(tok: Tokenizer, pairs: list[Pair], seq_len: int, separator: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (N, seq_len + 1) int64, mask (N, seq_len) float32); pairs whose response is cut away are dropped.

    mask[i, j] = 1 when target j (token j + 1) is a response token or the closing separator.
    """
    rows, masks = [], []
    prompts = tok.encode_batch([PROMPT_TEMPLATE.format(prompt=p) for p, _ in pairs], add_special_tokens=False)
    responses = tok.encode_batch([r for _, r in pairs], add_special_tokens=False)
    for p, r in zip(prompts, responses):
        ids = p.ids + r.ids + [separator]
        if len(p.ids) + 1 >= seq_len + 1:  # no response token would be scored
            continue
        ids = ids[:seq_len + 1]
        row = np.full(seq_len + 1, separator, dtype=np.int64)
        row[:len(ids)] = ids
        mask = np.zeros(seq_len, dtype=np.float32)
        mask[len(p.ids) - 1:len(ids) - 1] = 1.0  # targets len(p)..len(ids)-1, i.e. positions len(p)-1..
        rows.append(row)
        masks.append(mask)
    if not rows:
        return np.zeros((0, seq_len + 1), np.int64), np.zeros((0, seq_len), np.float32)
    return np.stack(rows), np.stack(masks)


def split_pairs(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, val ids) of n pairs: a seeded shuffle, round(n * val_fraction) held out (Table 8's 9:1)."""
    if n < 2:
        raise ConfigError(f"data.sft: need at least 2 prompt/response pairs, got {n}; add documents "
                          "(data.max_documents) or raise data.val_fraction")
    num_val = min(max(1, round(n * val_fraction)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[num_val:]), np.sort(perm[:num_val])


class SFTBundle:
    """Prompt/response rows with loss masks; batches are `MaskedBatch(tokens, mask)`."""

    def __init__(self, cfg: DataConfig, progress: bool = False) -> None:
        assert cfg.sft is not None
        self.config = cfg
        corpus = cfg.model_copy(update={"sft": None})
        if cfg.tokenizer == "pretrained" and cfg.tokenizer_path:  # e.g. the Llama 3 tokenizer: no corpus to prepare
            from wsdlab.data.tokenizer import load_pretrained, separator_id

            self.directory = None
            self.tokenizer = load_pretrained(cfg.tokenizer_path)
            self.vocab_size = self.tokenizer.get_vocab_size()
            self.separator_id = separator_id(self.tokenizer, "data.tokenizer_path")
        else:  # the corpus's own trained tokenizer
            self.directory = prepare_corpus(corpus, progress=progress)
            meta = read_meta(self.directory)
            self.tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
            self.vocab_size = int(meta["vocab_size"])
            self.separator_id = int(meta["separator_id"])
        self.num_classes = None
        self.seq_len = cfg.seq_len
        self.tokens_per_item = cfg.seq_len
        sft = cfg.sft
        if sft.source == "stdlib":
            pairs = stdlib_pairs(sft_documents(corpus))
        else:
            from wsdlab.data.shards import cache_root

            pairs = hf_pairs(sft, cache_root(cfg) / "hf")
        if sft.max_examples is not None:
            pairs = pairs[:sft.max_examples]
        tokens, mask = encode_pairs(self.tokenizer, pairs, cfg.seq_len, self.separator_id)
        train_ids, val_ids = split_pairs(len(tokens), sft.val_fraction, sft.seed)
        self.train_tokens, self.train_mask = tokens[train_ids], mask[train_ids]
        self.val_tokens, self.val_mask = tokens[val_ids], mask[val_ids]
        self.num_train, self.num_val = len(train_ids), len(val_ids)

    def train_batch(self, indices: np.ndarray) -> MaskedBatch:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return MaskedBatch((torch.from_numpy(self.train_tokens[idx]), torch.from_numpy(self.train_mask[idx])))

    def val_batch(self, indices: np.ndarray) -> MaskedBatch:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return MaskedBatch((torch.from_numpy(self.val_tokens[idx]), torch.from_numpy(self.val_mask[idx])))

    def decode(self, ids: Any) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().reshape(-1).tolist()
        return self.tokenizer.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

    def order(self):
        from wsdlab.data.orders import SequenceOrder

        return SequenceOrder(self.config.order, self.num_train)
