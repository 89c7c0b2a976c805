"""load_data: the LM bundle over a tiny stdlib corpus (the embedded default source), batches and decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsdlab.data import DataBundle, DataConfig, TokenBundle, load_data

TINY = DataConfig(max_documents=40, max_tokens=30_000, vocab_size=512, seq_len=32)


@pytest.fixture(scope="module")
def bundle() -> TokenBundle:
    data = load_data(TINY, progress=False)
    assert isinstance(data, TokenBundle)
    return data


def test_sizes_and_vocab(bundle: TokenBundle) -> None:
    assert isinstance(bundle, DataBundle)
    assert bundle.vocab_size == bundle.tokenizer.get_vocab_size() <= 512
    assert bundle.tokens_per_item == 32 and bundle.num_classes is None
    assert bundle.num_train == bundle.train.shape[0] and bundle.num_val == bundle.val.shape[0]
    # non-overlapping rows of seq_len + 1 = 33 tokens, the remainder dropped
    assert bundle.num_train == bundle.meta["train_tokens"] // 33 and bundle.num_val == bundle.meta["val_tokens"] // 33
    assert bundle.directory is not None and (bundle.directory / "tokenizer.json").is_file()
    assert bundle.meta["train_tokens"] + bundle.meta["val_tokens"] == 30_000


def test_train_batch_is_int64_rows_in_given_order(bundle: TokenBundle) -> None:
    idx = np.array([3, 0, 3, bundle.num_train - 1])
    batch = bundle.train_batch(idx)
    assert batch.shape == (4, 33) and batch.dtype == torch.int64
    assert np.array_equal(batch.numpy(), np.asarray(bundle.train)[idx].astype(np.int64))
    assert torch.equal(batch[0], batch[2])
    val = bundle.val_batch(np.arange(2))
    assert val.shape == (2, 33) and int(val.max()) < bundle.vocab_size


def test_out_of_range_index_names_split(bundle: TokenBundle) -> None:
    with pytest.raises(IndexError, match="val"):
        bundle.val_batch(np.array([bundle.num_val]))


def test_decode_round_trips_the_stream(bundle: TokenBundle) -> None:
    flat = np.asarray(bundle.train[:4]).reshape(-1)
    text = bundle.decode(torch.from_numpy(flat.astype(np.int64)))
    assert bundle.tokenizer.encode(text, add_special_tokens=False).ids == flat.tolist()
    sep_text = bundle.decode([bundle.separator_id])
    assert sep_text == "<|endoftext|>"


def test_stdlib_corpus_is_python_source(bundle: TokenBundle) -> None:
    text = bundle.decode(bundle.train_batch(np.arange(min(20, bundle.num_train))).reshape(-1))
    assert "def " in text or "import " in text


def test_order_is_the_seeded_permutation_epoch_after_epoch(bundle: TokenBundle) -> None:
    """Order seed 0, one portion, shuffled: epoch e is numpy's permutation seeded (0, e); positions
    n - 3 .. n + 2 are the last three of epoch 0 and the first three of epoch 1."""
    n = bundle.num_train
    assert (TINY.order.seed, TINY.order.num_portions, TINY.order.shuffle) == (0, 1, True)
    epoch0, epoch1 = (np.random.default_rng((0, e)).permutation(n) for e in (0, 1))
    assert np.array_equal(bundle.order().indices(0, 10), epoch0[:10])
    assert np.array_equal(bundle.order().indices(n - 3, 6), np.concatenate([epoch0[-3:], epoch1[:3]]))


def test_reload_is_the_same_corpus(bundle: TokenBundle) -> None:
    again = load_data(TINY, progress=False)
    assert again.directory == bundle.directory
    assert torch.equal(again.train_batch(np.arange(3)), bundle.train_batch(np.arange(3)))
