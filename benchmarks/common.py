"""What every benchmark needs: this machine's rates, timed child processes, the data."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def say(line: str = "") -> None:
    print(line, flush=True)


# --- This machine ----------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1-minute load average (other work on the machine slows every figure)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


def matmul_rate(
    dtype: torch.dtype, tokens: int = 2048, seconds: float = 1.0, device: str = "cpu"
) -> float:
    """Measured FLOP/s of a GPT-2-small-shaped matrix multiplication (tokens x 768 x 3072)."""
    a = torch.randn(tokens, 768, dtype=dtype, device=device)
    w = torch.randn(3072, 768, dtype=dtype, device=device)
    for _ in range(3):  # warm-up
        torch.nn.functional.linear(a, w)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
    synchronize()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.nn.functional.linear(a, w)
        runs += 1
    synchronize()
    return 2 * tokens * 768 * 3072 * runs / (time.perf_counter() - start)


def onednn_fp32_rate(tokens: int = 2048, seconds: float = 1.0) -> float | None:
    """The float32 rate of the same product through oneDNN, where PyTorch has it.

    For information only (the floors use ``matmul_rate``, what PyTorch's float32 reaches):
    PyTorch multiplies float32 matrices on a CPU with MKL but bfloat16 ones with oneDNN,
    and on an AMD EPYC we measured MKL's float32 at half of oneDNN's. Uses a private
    operator of PyTorch's (its compiler's fused linear); None where it is missing.
    """
    try:
        linear = torch.ops.mkldnn._linear_pointwise
        a, w = torch.randn(tokens, 768), torch.randn(3072, 768)
        for _ in range(3):
            linear(a, w, None, "none", [], "")
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            linear(a, w, None, "none", [], "")
            runs += 1
    except (AttributeError, RuntimeError):
        return None
    return 2 * tokens * 768 * 3072 * runs / (time.perf_counter() - start)


def memory_bandwidth(megabytes: int = 256, seconds: float = 1.0) -> float:
    """Measured bytes/s read plus written when copying a large float32 array (far larger
    than the caches): the rate an optimizer step streaming its state can reach."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)  # warm-up: the pages exist
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        target.copy_(source)
        runs += 1
    return 2 * source.numel() * 4 * runs / (time.perf_counter() - start)


@dataclass
class Machine:
    cpu: str
    cores: int | None
    threads: int
    torch_version: str
    matmul_flops: dict[str, float]  # "fp32"/"bf16" -> FLOP/s
    memory_bytes_per_second: float
    load: str
    onednn_fp32_flops: float | None = None  # information only: see onednn_fp32_rate

    @classmethod
    def measure(cls) -> Machine:
        rates = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
        return cls(
            cpu=cpu_name(),
            cores=os.cpu_count(),
            threads=torch.get_num_threads(),
            torch_version=torch.__version__,
            matmul_flops=rates,
            memory_bytes_per_second=memory_bandwidth(),
            load=load_average(),
            onednn_fp32_flops=onednn_fp32_rate(),
        )

    def describe(self) -> str:
        onednn = (
            f" (fp32 through oneDNN, not PyTorch's fp32 path here: "
            f"{self.onednn_fp32_flops / 1e9:.0f} GFLOP/s)"
            if self.onednn_fp32_flops
            else ""
        )
        return (
            f"{self.cpu}, {self.cores} cores, torch {self.torch_version}, {self.threads} "
            f"threads; matrix multiply (2048 x 768 x 3072) fp32 "
            f"{self.matmul_flops['fp32'] / 1e9:.0f} GFLOP/s, bf16 "
            f"{self.matmul_flops['bf16'] / 1e9:.0f} GFLOP/s{onednn}; memory copy "
            f"{self.memory_bytes_per_second / 1e9:.1f} GB/s; load average {self.load}"
        )


# --- Timed child processes -------------------------------------------------------------


@dataclass
class Timed:
    seconds: float  # wall time, process start to exit
    peak_gb: float  # the child's peak resident memory


def run_timed(command: list[str], log: Path | None = None) -> Timed:
    """Run ``command`` (from the repository root, this checkout's packages first); its
    wall time and peak memory. Its output goes to ``log`` (or is shown); a failure raises."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    out = log.open("w") if log else None
    start = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT if out else None
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if out:
        out.close()
    if child.returncode:
        where = f"; see {log}" if log else ""
        raise RuntimeError(f"{' '.join(command)} failed with exit code {child.returncode}{where}")
    # Linux reports kilobytes, macOS bytes.
    peak = usage.ru_maxrss / (1024**3 if sys.platform == "darwin" else 1024**2)
    return Timed(seconds, peak)


def gpt_spam(*args: str) -> list[str]:
    """The command line of ``gpt-spam ARGS`` with this interpreter."""
    return [sys.executable, "-m", "ch06_classification", *args]


# --- The weights -----------------------------------------------------------------------


def stand_in_weights(preset: str, folder: Path, **config_overrides: Any) -> Path:
    """A stand-in for OpenAI's released weights file of ``preset``, written in ``folder``.

    The real file cannot be downloaded everywhere the benchmark runs, and a run's time does
    not depend on the weights' values. So this writes the GPT-2 that ``--weights random``
    draws from the recipe's seed, under the released file's tensor names and layout: runs
    given ``--weights-dir folder`` then take the default recipe's path (the file memory-
    mapped, not 124 M random numbers drawn), and reach the accuracies ``--weights random``
    reaches. Its SHA-256 is remembered here, as after a user's first run with a downloaded
    file (``local_cache.py``).
    """
    from safetensors.torch import save_file

    from ch06_classification.finetuning.model import random_gpt
    from ch06_classification.finetuning.settings import TrainingSettings
    from ch06_classification.storage.base_weights import describe_pretrained
    from gpt.config import get_config
    from gpt.loading import openai_state_dict

    path = folder / f"{preset}.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = get_config(preset, **config_overrides)
    tensors = openai_state_dict(random_gpt(cfg, TrainingSettings().seed))
    save_file(tensors, str(path), metadata={"format": "pt"})
    del tensors
    describe_pretrained(preset, path)
    return path


# --- The data --------------------------------------------------------------------------


def prepare_data(data_dir: str | None, sms_source: str | None, scratch: Path) -> str:
    """A data folder with the default splits: ``data_dir`` if it has them, else made in
    ``scratch`` by ``gpt-spam download`` and ``gpt-spam split``."""
    from ch06_classification.storage.datafiles import SMS_SPAM_TSV, SPLIT_FILES

    needed = [SMS_SPAM_TSV, *SPLIT_FILES.values()]
    if data_dir and all((Path(data_dir) / name).is_file() for name in needed):
        return data_dir
    target = scratch / "data"
    source = ["--sms-source", sms_source] if sms_source else []
    run_timed(gpt_spam("download", "--data-dir", str(target), "--weights", "random", *source))
    run_timed(gpt_spam("split", "--data-dir", str(target)))
    return str(target)
