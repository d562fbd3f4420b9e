"""Helpers for the fault tests: data for `gpt-spam train`, processes that hold a
folder or die mid-write, a view of what a folder holds, and things that are not files
where a file should be."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from tests.run_cli import ROOT
from tests.synthetic_splits import write_synthetic_splits


def synthetic_data(data_dir: Path) -> Path:
    """Train/validation/test CSVs, plus a realistic set (a copy of test) for `evaluate`."""
    write_synthetic_splits(data_dir)
    shutil.copyfile(data_dir / "test.csv", data_dir / "test_realistic.csv")
    return data_dir


def train_args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run_dir),
        "--weights",
        "random",
        "--epochs",
        "1",
        *extra,
    ]


def collection_frame() -> pd.DataFrame:
    """300 ham and 60 spam messages shaped like ``read_sms_spam``'s output."""
    ham = [("ham", f"see you at {i}") for i in range(300)]
    spam = [("spam", f"WIN prize {i}, call now") for i in range(60)]
    return pd.DataFrame(ham + spam, columns=["Label", "Text"])


def contents(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` (hidden ones included) and its bytes."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def python(code: str, *args: str | Path, **popen: object) -> subprocess.Popen:
    """Start ``python -c code args`` with the repository importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env, **popen
    )


HOLD_FOLDER = """
    import sys, time
    from ch06_classification.storage.safe_files import folder_lock
    with folder_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
"""


class FolderHolder:
    """Another process holding ``folder_lock`` on a folder, as a running command does."""

    def __init__(self, folder: Path) -> None:
        self.process = python(HOLD_FOLDER, folder, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "held"

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: nothing runs on the way out
        self.process.wait()

    def __enter__(self) -> FolderHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# What can stand where a file should be, and how gpt-spam names it.
NOT_FILES = {
    "fifo": "a FIFO (named pipe)",
    "device": "a device (a link to /dev/null)",
    "folder": "a folder",
}


def put_not_a_file(path: Path, kind: str) -> Path:
    """Replace the file at ``path`` with a ``kind`` of ``NOT_FILES``."""
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to(os.devnull)
    else:
        path.mkdir()
    return path


@contextmanager
def never_blocks(path: Path) -> Iterator[None]:
    """If ``path`` is a FIFO: while the block runs, whoever opens it to read finds it empty
    at once, instead of waiting forever for a writer, so that a test of code that must
    never open it fails rather than hangs.

    The writer is another process, which opens the FIFO (waiting for a reader) and closes
    it, again and again: a thread would wait for the reader to release the GIL, which code
    outside Python (safetensors' ``safe_open``) may not do while it waits.
    """
    if not stat.S_ISFIFO(os.lstat(path).st_mode):
        yield
        return
    writer = subprocess.Popen(["sh", "-c", 'while :; do : > "$1"; done', "sh", str(path)])
    try:
        yield
    finally:
        writer.kill()
        writer.wait()
