"""Shared test set-up: small thread count, a per-session cache, GPU marker handling."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep prepared corpora of the test session out of the user's cache (shared across tests)."""
    if "WSDLAB_TEST_CACHE" in os.environ:
        os.environ["WSDLAB_CACHE"] = os.environ["WSDLAB_TEST_CACHE"]
    else:
        os.environ["WSDLAB_CACHE"] = str(tmp_path_factory.mktemp("wsdlab-cache"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
