"""Shared test setup."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """The tests' models are tiny: they run fastest, and reproducibly, on one intra-op thread (and far
    faster than on two when other processes share the cores). Worker processes set their own."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
