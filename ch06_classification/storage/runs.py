"""Run folders: where each training run keeps its checkpoint, metrics and plots.

A run folder holds one run. Training claims its folder before it starts (see
:func:`claim_run_dir`) and saves everything in one go at the end, so a folder never holds
the checkpoint of one run beside the metrics, evaluation or plots of another.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ch06_classification.classifier import add_classification_head
from ch06_classification.finetuning.model import trained_parameter_names
from ch06_classification.storage.checkpoint import (
    CHECKPOINT_NAME,
    ClassifierInfo,
    save_checkpoint_folder,
)
from ch06_classification.storage.datafiles import id2label
from ch06_classification.storage.printable import listed
from ch06_classification.storage.safe_files import (
    FileReadError,
    claim_folder,
    file_exists,
    is_own_file,
    read_json,
    replace_together,
    settle,
    write_json,
)
from ch06_classification.training import TrainingHistory
from gpt.config import GPTConfig
from gpt.errors import UserFacingError
from gpt.loading import skip_init
from gpt.model import GPTModel

DEFAULT_RUNS_DIR = Path("runs")
# Files that only a training run writes: a folder holding one of them is a run folder.
RUN_MARKERS = (CHECKPOINT_NAME, "metrics.json")
# The fingerprints (SHA-256) of the texts a run was trained on; see evaluation.py.
TRAINING_TEXTS_FILE = "training_texts.json"


@dataclass
class TrainingResult:
    """What a fine-tuning produced (``fine_tune``), and what a run folder keeps of it."""

    model: GPTModel
    info: ClassifierInfo
    history: TrainingHistory
    accuracies: dict[str, float]  # on every example of each split
    # classification_metrics of each split (F1, precision, ...; per class for N > 2)
    metrics: dict[str, dict[str, Any]]
    path: str  # "fast", "full" or "book": see choose_path
    path_description: str
    prefix_seconds: float  # caching the frozen blocks (fast path only)
    train_seconds: float
    # From data and model ready to final accuracies: prefix cache, training, evaluation.
    recipe_seconds: float
    device: str
    processes: int = 1  # how many processes trained it together (torchrun; DDP)
    # The exact texts it was trained on: evaluation calls a test message "unseen" only
    # if it is not one of them, whatever data folder is evaluated later.
    training_texts: list[str] = field(default_factory=list)


def new_run_dir(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """A fresh ``runs/<timestamp>/`` folder (timestamps sort in the order runs were made)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    runs_dir = Path(runs_dir)
    tidy_runs(runs_dir)
    run_dir, suffix = runs_dir / stamp, 1
    while run_dir.exists():  # two runs within one second
        suffix += 1
        run_dir = runs_dir / f"{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


@contextmanager
def claim_run_dir(
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    needed_bytes: int = 0,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
) -> Iterator[Path]:
    """Hold a run folder from before training until its run is saved.

    ``None`` makes a new ``runs_dir/<timestamp>/``. Up front, before any long work: the
    folder is created and a file written there (with ``needed_bytes`` free); one that
    already holds a run is refused unless ``overwrite``; and while the block runs, any
    other command that wants to write there is refused (:func:`folder_lock`). A folder
    made here and left empty, because training failed, is removed again.
    """
    created = run_dir is None or not Path(run_dir).exists()
    run_dir = new_run_dir(runs_dir) if run_dir is None else Path(run_dir)
    with claim_folder(run_dir, needed_bytes, made_here=created):
        _check_replaceable(run_dir, overwrite)
        yield run_dir


def tidy_runs(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> None:
    """Clear what interrupted commands left in the run folders of ``runs_dir``.

    A run killed while saving leaves a staging folder as large as its checkpoint in a run
    folder that no later command would visit; it goes, and so does the run folder if
    nothing else is in it.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return
    for run_dir in runs_dir.iterdir():
        if run_dir.is_dir() and settle(run_dir):
            with suppress(OSError):  # not empty after all: another command's, say
                run_dir.rmdir()


def checkpoint_bytes(cfg: GPTConfig, trained_only: str | None = None) -> int:
    """About how large a classifier's checkpoint will be: every tensor, or with
    ``trained_only`` (a ``TRAINABLE_LAYERS`` choice) those a lean checkpoint stores."""
    with torch.device("meta"), skip_init():  # shapes only: nothing allocated or drawn
        model = add_classification_head(GPTModel(cfg))
    tensors = model.state_dict()
    if trained_only is not None:
        tensors = {name: tensors[name] for name in trained_parameter_names(model, trained_only)}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def replace_problem(run_dir: str | Path, overwrite: bool = False) -> str | None:
    """Why a new run may not go into ``run_dir``: a run is already there (unless
    ``overwrite``), or files that are not a run's would be deleted. None if it may."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None  # made when claimed (a file in the way is found then)
    present = [name for name in os.listdir(run_dir) if not is_own_file(name)]
    if not present:
        return None
    if not any(name in present for name in RUN_MARKERS):
        return (
            f"{run_dir} holds files but no run ({listed(sorted(present), shown=3)}): "
            "choose a new or empty folder for the run"
        )
    if not overwrite:
        return (
            f"{run_dir} already holds a run: pass --overwrite to replace it (its evaluations "
            "and plots go with it), or choose another --run-dir"
        )
    return None


def _check_replaceable(run_dir: Path, overwrite: bool) -> None:
    problem = replace_problem(run_dir, overwrite)
    if problem:
        raise UserFacingError(problem)


def finished_runs(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> list[Path]:
    """The run folders of ``runs_dir`` that hold a finished checkpoint, oldest first."""
    runs_dir = Path(runs_dir)
    tidy_runs(runs_dir)
    return sorted(
        (path.parent for path in runs_dir.glob(f"*/{CHECKPOINT_NAME}")),
        key=lambda run: (run / CHECKPOINT_NAME).stat().st_mtime,
    )


def _no_run_error(runs_dir: str | Path) -> UserFacingError:
    return UserFacingError(
        f"no trained model in {runs_dir}/: run `gpt-spam train` (scripts/03_train.py) "
        "first, or pass --run-dir/--checkpoint"
    )


def latest_run_dir(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The most recent run folder that holds a finished checkpoint."""
    finished = finished_runs(runs_dir)
    if not finished:
        raise _no_run_error(runs_dir)
    return finished[-1]


def trained_on(run_dir: str | Path) -> str | None:
    """The data folder a run was trained on, as its settings recorded it (``metrics.json``);
    None if the run does not say."""
    path = Path(run_dir) / "metrics.json"
    try:
        settings = read_json(path).get("settings") if file_exists(path) else None
    except (FileReadError, AttributeError):  # unreadable, or not an object: it does not say
        return None
    data_dir = settings.get("data_dir") if isinstance(settings, dict) else None
    return data_dir if isinstance(data_dir, str) else None


@dataclass(frozen=True)
class DefaultRun:
    """The run a step uses when the user names none (:func:`default_run`)."""

    path: Path
    data_dir: Path  # the data folder the user's step is about
    trained_data_dir: str | None  # the data folder the run was trained on, if it says

    @property
    def matches(self) -> bool:
        return self.trained_data_dir is not None and same_folder(
            self.trained_data_dir, self.data_dir
        )

    def describe(self) -> str:
        """E.g. ``runs/20261203-101500/, the latest run trained on data/``."""
        if self.matches:
            return f"{self.path}/, the latest run trained on {self.data_dir}/"
        if self.trained_data_dir is None:
            this_one = "this one does not say what it was trained on"
        else:
            this_one = f"this one was trained on {Path(self.trained_data_dir)}/"
        return (
            f"{self.path}/, the latest run (none in {self.path.parent}/ was trained on "
            f"{self.data_dir}/; {this_one})"
        )


def same_folder(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def default_run(data_dir: str | Path, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> DefaultRun:
    """The run ``classify`` and ``evaluate`` use without ``--run-dir``: the latest finished
    run trained on ``data_dir``, else the latest finished run (whose description says so).

    A run of your own CSV (``split --csv ... --data-dir data/tickets``) is not what a plain
    ``classify`` of an SMS should answer with, though it may be the latest.
    """
    finished = finished_runs(runs_dir)
    if not finished:
        raise _no_run_error(runs_dir)
    for run in reversed(finished):
        data = trained_on(run)
        if data is not None and same_folder(data, data_dir):
            return DefaultRun(run, Path(data_dir), data)
    return DefaultRun(finished[-1], Path(data_dir), trained_on(finished[-1]))


def choose_run(
    path: str | Path | None, data_dir: str | Path, runs_dir: str | Path = DEFAULT_RUNS_DIR
) -> tuple[Path, DefaultRun | None]:
    """The run ``--run-dir`` names (then None), or the default one for ``data_dir`` with how
    it was chosen (:func:`default_run`), for the step to say which run it uses."""
    if path is None:
        chosen = default_run(data_dir, runs_dir)
        return chosen.path, chosen
    return find_run(path, runs_dir), None


def find_run(
    path: str | Path | None,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
    data_dir: str | Path = "data",
) -> Path:
    """The run named by ``--run-dir`` (a run folder or its checkpoint file), or the default
    one for ``data_dir`` (:func:`default_run`)."""
    if path is None:
        return default_run(data_dir, runs_dir).path
    path = Path(path)
    if not path.exists():
        raise UserFacingError(f"--run-dir {path} does not exist")
    return path


def write_training_texts(run_dir: Path, texts: list[str], extra: dict[str, Any]) -> Path:
    """Record what the run was trained on: the SHA-256 of each distinct training text."""
    # Imported when a run is saved: no pandas for classify's cold start.
    from ch06_classification.sources.split_files import text_fingerprints

    return write_json(
        run_dir / TRAINING_TEXTS_FILE,
        {
            "data_dir": extra.get("settings", {}).get("data_dir"),
            "rows": len(texts),
            "sha256": text_fingerprints(texts),
        },
    )


def read_training_texts(run_dir: Path) -> set[str] | None:
    """The fingerprints of a run's training texts; None for a run that did not record them."""
    path = Path(run_dir) / TRAINING_TEXTS_FILE
    if not file_exists(path):
        return None
    try:
        return set(read_json(path)["sha256"])
    except FileReadError as error:
        raise UserFacingError(f"{error}: retrain the run") from None
    except (KeyError, TypeError):
        raise UserFacingError(
            f"{path} is damaged (not a list of fingerprints): retrain the run"
        ) from None


def save_training_run(
    result: TrainingResult, run_dir: str | Path, save_checkpoint: bool = True
) -> Path:
    """Write a finished run: checkpoint (model.safetensors, config.json), metrics.json,
    history.json, loss and accuracy plots.

    ``save_checkpoint=False`` leaves the model out (experiments that only need the figures).

    The files replace whatever the folder held, together: a run saved over an older one
    (``--overwrite``) leaves nothing of the old one behind, not even its evaluation, and
    an interruption while saving leaves the old run as it was.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with replace_together(run_dir, replace_all=True) as staging:
        _check_replaceable(run_dir, overwrite=True)
        _write_run_files(result, staging, save_checkpoint)
    return run_dir


def _write_run_files(result: TrainingResult, run_dir: Path, save_checkpoint: bool = True) -> None:
    # Imported when a run is saved: matplotlib is no import for classify's cold start.
    from ch06_classification.plots import plot_values

    if save_checkpoint:
        save_checkpoint_folder(result.model, result.info, run_dir)
    write_training_texts(run_dir, result.training_texts, result.info.extra)
    history = result.history
    write_json(run_dir / "history.json", history.to_dict())
    write_json(
        run_dir / "metrics.json",
        {
            "id2label": id2label(result.info.labels),
            "accuracy": result.accuracies,
            "metrics": result.metrics,
            "training_path": result.path,
            "training_path_description": result.path_description,
            "prefix_cache_seconds": round(result.prefix_seconds, 3),
            "training_seconds": round(result.train_seconds, 3),
            "recipe_seconds": round(result.recipe_seconds, 3),
            "examples_seen": history.examples_seen,
            "steps": history.steps,
            "device": result.device,
            "processes": result.processes,
            "torch_version": torch.__version__,
            "settings": result.info.extra.get("settings", {}),
        },
    )
    # Evaluation points sit after a whole number of steps; epochs = steps / steps per epoch.
    steps_per_epoch = history.steps / max(1, len(history.train_accs))
    epochs_seen = [(step + 1) / steps_per_epoch for step in history.eval_steps]
    plot_values(
        epochs_seen,
        history.eval_examples_seen,
        history.train_losses,
        history.val_losses,
        label="loss",
        out_dir=run_dir,
        name="loss",
    )
    epochs = list(range(1, len(history.train_accs) + 1))
    examples_per_epoch = history.examples_seen / max(1, len(epochs))
    plot_values(
        epochs,
        [e * examples_per_epoch for e in epochs],
        history.train_accs,
        history.val_accs,
        label="accuracy",
        out_dir=run_dir,
        name="accuracy",
    )
