"""Where the numbers are computed, and in what precision.

``pick_device`` chooses the device (a GPU if there is one); ``autocast`` runs the matrix
multiplications in bfloat16 when asked. Training, evaluation and classification all take
their device and precision from here, so every command means the same by ``--device``
and ``--precision``.
"""

from __future__ import annotations

import ctypes
from contextlib import AbstractContextManager, nullcontext

import torch

from gpt.errors import UserFacingError

PRECISIONS = ("fp32", "bf16")

# The precisions computed in, by their option names (`--precision fp32|bf16`).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA if present, then Apple's MPS, then the CPU, unless a device is named.

    A named device that PyTorch does not know, or that this machine lacks, is a
    ``UserFacingError``.
    """
    if requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise UserFacingError(
                f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps"
            ) from None
        # How many of each kind this machine has; "meta" and the like hold no data to compute on.
        xpu = getattr(torch, "xpu", None)
        present = {
            "cpu": 1,
            "cuda": torch.cuda.device_count(),
            "mps": int(torch.backends.mps.is_available()),
            "xpu": xpu.device_count() if xpu is not None and xpu.is_available() else 0,
        }
        if device.type not in present:
            raise UserFacingError(
                f"cannot compute on device {requested!r}: use auto, cpu, cuda, cuda:N or mps"
            )
        if (device.index or 0) >= present[device.type]:
            raise UserFacingError(f"device {requested!r} is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, precision: str = "fp32") -> AbstractContextManager:
    """A context that runs matrix multiplications in bfloat16 when ``precision == "bf16"``.

    Autocast keeps the weights, the optimizer state and the reductions in float32 and only
    lowers the precision of the operations that tolerate it, which is why accuracy barely
    moves while the matrix multiplications run several times faster on CPUs and GPUs
    with bfloat16 units.
    """
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")


def native_bf16(device: torch.device) -> str | None:
    """What gives ``device`` native bfloat16 matrix multiplication, in a few words, or None.

    Without such units PyTorch emulates bfloat16 (converting to float32 and back), which is
    slower than float32: ``--precision auto`` then stays in float32. A GPU qualifies from
    NVIDIA's Ampere generation on (compute capability 8.0: bfloat16 tensor cores); a CPU
    with Intel's AMX tiles or the AVX-512 BF16 dot-product instructions (or Arm's BF16
    extension), as the operating system reports its flags.
    """
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
        return None
    if device.type != "cpu":
        return None  # e.g. Apple's MPS: not claimed, so auto stays with float32
    flags = cpu_flags()
    for flag, unit in (
        ("amx_bf16", "AMX bfloat16 tiles"),
        ("avx512_bf16", "AVX-512 BF16 instructions"),
        ("bf16", "Arm BF16 instructions"),  # /proc/cpuinfo's "Features" on aarch64
    ):
        if flag in flags:
            return f"this CPU's {unit}"
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> bool:
    """Ask the C allocator to keep freed memory for the next allocation (glibc only).

    A training step allocates and frees the same large tensors every time: gradients,
    activations, bfloat16 copies of weights. By default glibc gives blocks of more than a
    few megabytes back to the operating system when they are freed, so the next step's
    identical allocation starts from fresh pages, and the kernel must fault in and zero
    every one of them. On gpt2-small's trained last block that costs more than the matrix
    products themselves (a [3072, 768] gradient written into new pages takes ~3x as long),
    and more in bfloat16, which allocates more temporaries. Keeping up to 32 MiB blocks in
    the heap, and not trimming it, makes every step after the first reuse warm memory.
    Returns whether the setting took (False off glibc: macOS, Windows, musl).
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # The largest mmap threshold glibc accepts on 64-bit systems is 32 MiB.
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 * 1024**2)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2**30)
    )
