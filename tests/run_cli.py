"""Run the ``gpt-spam`` command in a fresh process, the way a user does, but offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Settings from the developer's shell that would change what the command does.
_DROPPED = ("SMS_SPAM_SOURCE", "GPT2_WEIGHTS_DIR")


def gpt_spam(
    *args: str | Path, cwd: Path, input: str | bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m ch06_classification ARGS`` with the repository on the path, run to its end.

    ``HF_HUB_OFFLINE`` makes any attempt to reach the Hugging Face Hub fail at once instead
    of touching the network.
    """
    return subprocess.run(
        command(args),
        cwd=cwd,
        env=environment(),
        input=input,
        capture_output=True,
        text=not isinstance(input, bytes),
        timeout=timeout,
    )


def start_gpt_spam(*args: str | Path, cwd: Path) -> subprocess.Popen:
    """The same command, started: the test writes its stdin (bytes) and reads its stdout
    and stderr as they come."""
    return subprocess.Popen(
        command(args),
        cwd=cwd,
        env=environment(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def command(args: tuple[str | Path, ...]) -> list[str]:
    return [sys.executable, "-m", "ch06_classification", *map(str, args)]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env["PYTHONPATH"] = str(ROOT)
    env["HF_HUB_OFFLINE"] = "1"
    return env
