"""Run folders: where each training run keeps its checkpoint, metrics and plots."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from ch06_classification.checkpoint import CHECKPOINT_NAME
from ch06_classification.datafiles import atomic_output
from gpt.errors import UserFacingError

DEFAULT_RUNS_DIR = Path("runs")


def new_run_dir(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """A fresh ``runs/<timestamp>/`` folder (timestamps sort in the order runs were made)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    runs_dir = Path(runs_dir)
    run_dir, suffix = runs_dir / stamp, 1
    while run_dir.exists():  # two runs within one second
        suffix += 1
        run_dir = runs_dir / f"{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def latest_run_dir(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The most recent run folder that holds a finished checkpoint."""
    runs_dir = Path(runs_dir)
    finished = sorted(
        (path.parent for path in runs_dir.glob(f"*/{CHECKPOINT_NAME}")),
        key=lambda run: (run / CHECKPOINT_NAME).stat().st_mtime,
    )
    if not finished:
        raise UserFacingError(
            f"no trained model in {runs_dir}/: run `gpt-spam train` (scripts/03_train.py) "
            "first, or pass --run-dir/--checkpoint"
        )
    return finished[-1]


def write_json(path: str | Path, values: Any) -> Path:
    """Write ``values`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(values, indent=2, sort_keys=False) + "\n")
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
