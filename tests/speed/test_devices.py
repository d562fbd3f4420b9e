"""Where computations run and in what precision: pick_device and autocast."""

from __future__ import annotations

import sys

import pytest
import torch

from ch06_classification.speed.devices import autocast, pick_device, reuse_freed_memory
from gpt.errors import UserFacingError


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device("auto") == torch.device(expected)
    assert pick_device() == torch.device(expected)  # "auto" is the default


def test_a_named_device_is_taken_as_named():
    assert pick_device("cpu") == torch.device("cpu")


def test_unknown_or_absent_device_is_a_user_error():
    with pytest.raises(UserFacingError, match="unknown device 'gpu0'"):
        pick_device("gpu0")
    with pytest.raises(UserFacingError, match="'cuda:99' is not available"):
        pick_device("cuda:99")


def test_autocast_lowers_matrix_products_to_bfloat16_only_when_asked():
    a, b = torch.randn(2, 3), torch.randn(3, 4)
    cpu = torch.device("cpu")
    with autocast(cpu, "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast(cpu, "fp16")


@pytest.mark.skipif(sys.platform != "linux", reason="mallopt is glibc's")
def test_freed_memory_is_kept_for_reuse_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert reuse_freed_memory() is True
    assert reuse_freed_memory() is True  # idempotent: a second call changes nothing
