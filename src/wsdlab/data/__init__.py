"""Data: text sources, tokenizers, packed token corpora, read orders, image datasets."""

from wsdlab.data.bundle import Batch, DataBundle, ImageBundle, TokenBundle, load_data, prepared_marker
from wsdlab.data.config import DataConfig, OrderConfig
from wsdlab.data.orders import SequenceOrder
from wsdlab.data.shards import corpus_dir, prepare_corpus, read_meta

__all__ = [
    "Batch",
    "DataBundle",
    "DataConfig",
    "ImageBundle",
    "OrderConfig",
    "SequenceOrder",
    "TokenBundle",
    "corpus_dir",
    "load_data",
    "prepare_corpus",
    "prepared_marker",
    "read_meta",
]
