"""Fixtures shared by the trainer's tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test: on a CPU shared with other jobs, OpenMP threads spin-waiting on each
    other made a training step 5-10x slower than a single thread. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` or an autouse fixture of their own."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
