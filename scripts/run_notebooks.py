"""Run the notebooks headless and save their outputs: what a reader sees without running them.

    python scripts/run_notebooks.py --sms-source path/to/sms_spam_collection.zip
    make notebooks-run ARGS="--sms-source path/to/sms_spam_collection.zip"
    python scripts/run_notebooks.py notebooks/ch06_main.ipynb --mode ci --no-save

Each notebook runs top to bottom in a fresh kernel (nbclient), from ``notebooks/``, by
default in ``GPT_SPAM_NOTEBOOK_MODE=offline``: GPT-2 small from random weights, nothing
downloaded (the dataset comes from ``--sms-source`` or ``SMS_SPAM_SOURCE``), on this
machine's CPU or GPU. Its outputs are written back into the notebook, with, in the
notebook's metadata (``gpt_spam``), the mode it ran in, on what device, how long it took,
and the SHA-256 of the code it ran on (``CODE_FILES``). ``tests/test_notebooks.py`` checks
that hash against the code as it is now: change that code, and run this again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
METADATA_KEY = "gpt_spam"
MODES = ("offline", "real", "ci")

# The code the saved outputs are checked against: the chapter core, whose functions the
# notebooks call as the book does, and the fast path, which trains the book's cell on a
# CPU. (The tools around them change more often; the test suite runs every notebook on
# the code as it is, in CI mode, so a notebook that stops running is caught anyway.)
CODE_FILES = tuple(
    [
        *(
            f"ch06_classification/{name}.py"
            for name in (
                "download", "splits", "dataset", "classifier", "training", "plots", "inference"
            )
        ),
        *(
            f"gpt/{name}.py"
            for name in ("config", "errors", "model", "generate", "tokenizer", "weights")
        ),
        "ch06_classification/speed/fast_path.py",
    ]
)  # fmt: skip

CELL_TIMEOUT_S = 3600  # a cell of the real run on a slow CPU


def code_sha256(root: Path = ROOT) -> str:
    """The SHA-256 of ``CODE_FILES`` (each file's path, then its bytes)."""
    digest = hashlib.sha256()
    for name in CODE_FILES:
        digest.update(name.encode() + b"\0")
        digest.update((root / name).read_bytes())
    return digest.hexdigest()


def notebook_env(mode: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: this one, the mode, the package from this checkout."""
    return {
        **os.environ,
        "GPT_SPAM_NOTEBOOK_MODE": mode,
        # The kernel imports the package from this checkout, installed or not.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **(extra or {}),
    }


def execute(path: Path, env: dict[str, str], timeout: int = CELL_TIMEOUT_S):
    """Run the notebook at ``path`` in a fresh kernel; return it, with its outputs, and the
    seconds it took. A cell that fails raises ``nbclient.exceptions.CellExecutionError``;
    a kernel that dies (killed, or crashed), a ``RuntimeError``."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=timeout,
        record_timing=False,  # timestamps in every cell would make each diff unreadable
        # One output per stream and cell, as a terminal leaves it (a progress bar: its end).
        coalesce_streams=True,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},  # run from notebooks/
    )
    start = time.perf_counter()
    # A crash in native code prints its Python traceback to stderr instead of nothing.
    try:
        client.execute(env={"PYTHONFAULTHANDLER": "1", **env})
    # (nbclient may trip over its own cleanup of a dead kernel: an AssertionError)
    except (nbclient.exceptions.DeadKernelError, AssertionError) as error:
        raise RuntimeError(
            f"{path.name}: the kernel died after {time.perf_counter() - start:.0f} s, killed "
            "or crashed (a crash prints its traceback above)"
        ) from error
    return notebook, time.perf_counter() - start


def save(notebook, path: Path, mode: str, device: str, seconds: float) -> None:
    """Write ``notebook`` with its outputs and what they came from."""
    import nbformat

    for cell in notebook.cells:  # a progress bar that cleared itself leaves only blanks
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.output_type != "stream" or o.text.strip()]
    notebook.metadata[METADATA_KEY] = {
        "mode": mode,
        "device": device,
        "seconds": round(seconds),
        "code_sha256": code_sha256(),
    }
    nbformat.write(notebook, path)


def device_name() -> str:
    """E.g. ``AMD EPYC 7B13, 2 cores``: what the saved outputs were computed on."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or "CPU"
    with contextlib.suppress(OSError):  # Linux names the processor here
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            names = [
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            ]
        model = names[0] if names else model
    return f"{model}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_notebooks.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=Path,
        help="the notebooks to run (default: every notebook in notebooks/)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="offline",
        help="GPT_SPAM_NOTEBOOK_MODE (default: offline, the outputs committed)",
    )
    parser.add_argument(
        "--sms-source",
        metavar="PATH",
        help="the dataset's zip (default: $SMS_SPAM_SOURCE; without either, it is downloaded)",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="run them only: leave the files as they are"
    )
    args = parser.parse_args(argv)

    extra = {"SMS_SPAM_SOURCE": str(Path(args.sms_source).resolve())} if args.sms_source else {}
    env = notebook_env(args.mode, extra)
    paths = args.notebooks or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    device = device_name()
    for path in paths:
        print(f"{path.name}: running in {args.mode} mode on {device} ...", flush=True)
        notebook, seconds = execute(path, env)
        if not args.no_save:
            save(notebook, path, args.mode, device, seconds)
        print(f"{path.name}: {seconds:.0f} s{'' if args.no_save else ', outputs saved'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
