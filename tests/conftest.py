"""Shared test fixtures. Every test is offline: nothing here reaches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

# tiktoken downloads its BPE files on first use; on the offline build machines they sit in
# ../shared. Set here too so a bare `pytest` works the same as CI.
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")

# Small, deterministic CPU work: one thread per test process keeps timings steady.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real SMS Spam Collection from ../shared/data; tests using it skip without it."""
    folder = SHARED / "data"
    if not (folder / "SMSSpamCollection").is_file():
        pytest.skip("the real SMS Spam Collection is not in ../shared/data")
    return folder


@pytest.fixture(scope="session")
def tokenizer():
    from gpt.tokenizer import get_tokenizer

    return get_tokenizer()
