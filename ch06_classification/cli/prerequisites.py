"""What each step needs before its long work starts, checked up front and reported at once.

A step that finds its data, weights or run missing only after minutes of work, or one
missing thing per attempt, wastes a user's hour. Each command calls :func:`require` with
the checks it needs; every problem found is reported in one message, each with the exact
option or environment variable that fixes it (written ``ARGS="..."`` when the command runs
under ``make``, where that is how options are given).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ch06_classification.storage.checkpoint import CHECKPOINT_NAME
from ch06_classification.storage.datafiles import (
    IMDB_REVIEWS_CSV,
    IMDB_SOURCE_ENV_VAR,
    SMS_SPAM_TSV,
    SOURCE_ENV_VAR,
    SPLIT_FILES,
    option,
)
from ch06_classification.storage.safe_files import file_exists
from gpt.errors import UserFacingError


def require(*problems: str | None) -> None:
    """Raise one ``UserFacingError`` listing every problem found (``None`` means fine)."""
    found = [problem for problem in problems if problem]
    if len(found) == 1:
        raise UserFacingError(found[0])
    if found:
        raise UserFacingError(
            f"{len(found)} things to fix before starting:\n" + "\n".join(f"  - {p}" for p in found)
        )


def data_dir_option(data_dir: Path) -> str:
    return "" if Path(data_dir) == Path("data") else f" --data-dir {data_dir}"


def dataset_problem(data_dir: Path, dataset: str = "sms") -> str | None:
    """The validated collection (``dataset="imdb"``: the IMDB reviews) that ``gpt-spam
    download`` leaves in the data folder."""
    if dataset == "imdb":
        if (Path(data_dir) / IMDB_REVIEWS_CSV).is_file():
            return None
        return (
            f"the IMDB reviews are not in {data_dir}/: run `gpt-spam download --dataset imdb"
            f"{data_dir_option(data_dir)}` first (offline: add "
            f"{option('--imdb-source PATH')}, or set IMDB_SOURCE=PATH)"
        )
    if (Path(data_dir) / SMS_SPAM_TSV).is_file():
        return None
    return (
        f"the dataset is not in {data_dir}/: run `gpt-spam download{data_dir_option(data_dir)}` "
        f"first (offline: add {option('--sms-source PATH')}, or set SMS_SPAM_SOURCE=PATH)"
    )


def splits_problem(data_dir: Path, splits: tuple[str, ...] = ("train", "validation", "test")):
    """The split CSVs ``gpt-spam split`` writes."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        if data_dir == Path("data"):
            return "data/ does not exist: run `gpt-spam download`, then `gpt-spam split` first"
        return f"--data-dir {data_dir} does not exist"
    absent = [
        SPLIT_FILES[split] for split in splits if not (data_dir / SPLIT_FILES[split]).is_file()
    ]
    if not absent:
        return None
    return (
        f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} not in {data_dir}/: "
        f"run `gpt-spam split{data_dir_option(data_dir)}` first"
    )


def other_split_problem(
    data_dir: Path, dataset: str = "sms", source: str | Path | None = None
) -> str | None:
    """A split of other data than ``dataset`` (for "own", the file ``source``) in the data
    folder: a command that splits for you (``experiments``, ``pipeline``) never replaces
    it; only ``gpt-spam split`` itself does, when asked to."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.sources.split_files import SplitOrigin, split_origin

    try:
        origin = split_origin(data_dir)
    except UserFacingError as error:  # a damaged split report
        return str(error)
    if origin is None or origin.is_of(dataset, source):  # type: ignore[arg-type]
        return None
    wanted = SplitOrigin(dataset, None if source is None else str(source)).describe()
    return (
        f"{data_dir} holds a split of {origin.describe()}, not of {wanted}: give another "
        "--data-dir (only `gpt-spam split` replaces a split of other data)"
    )


def own_texts_problem(args, read: bool = True) -> str | None:
    """The user's own labelled texts (``--csv``/``--tsv``): the file exists, and with
    ``read`` it reads as labelled texts (what ``split`` would refuse, found up front)."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.storage.datafiles import DataError

    own_file = getattr(args, "csv", None) or getattr(args, "tsv", None)
    if own_file is None:
        return None
    fmt = "csv" if args.csv else "tsv"
    if not Path(own_file).is_file():
        return f"--{fmt} {own_file}: no such file"
    if read:
        # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
        from ch06_classification.sources.labelled_texts import read_labelled_texts

        try:
            read_labelled_texts(own_file, args.text_column, args.label_column, fmt)
        except DataError as error:
            return str(error)
    return None


def weights_problem(preset: str, weights: str, weights_dir: str | Path | None) -> str | None:
    """OpenAI's weights for ``preset``, unless training starts from random ones: in the
    folder given by ``--weights-dir`` (or ``GPT2_WEIGHTS_DIR``), else in the download cache."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from gpt.hub import WEIGHTS_DIR_ENV, cached_weights, find_local_weights
    from gpt.weights import WeightsError

    if weights == "random":
        return None
    weights_dir = weights_dir or os.environ.get(WEIGHTS_DIR_ENV) or None
    if weights_dir is not None:
        try:
            find_local_weights(preset, weights_dir)
        except WeightsError as error:
            return f"{error} (--weights-dir or {WEIGHTS_DIR_ENV})"
        return None
    if cached_weights(preset) is not None:
        return None
    return (
        f"GPT-2's pretrained weights ({preset}) are not downloaded: run `gpt-spam download` "
        f"first, or pass {option('--weights-dir FOLDER')} for a folder holding "
        f"model.safetensors (or set {WEIGHTS_DIR_ENV}=FOLDER), or start from random weights "
        f"with {option('--weights random')}"
    )


def tokenizer_problem() -> str | None:
    """GPT-2's tokenizer files, shipped with the package (a broken install lacks them)."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from gpt.tokenizer import get_tokenizer

    try:
        get_tokenizer()
    except UserFacingError as error:
        return str(error)
    return None


def run_problem(run: Path | None, data_dir: Path = Path("data")) -> str | None:
    """A trained run: the one ``--run-dir`` names (a folder or its checkpoint), or the
    latest finished one in ``runs/`` (trained on ``data_dir``, if one was)."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.storage.runs import find_run

    try:
        run = find_run(run, data_dir=data_dir)
    except UserFacingError as error:
        return str(error)
    try:  # a folder, a FIFO or a device where the checkpoint should be is named as such
        found = file_exists(run / CHECKPOINT_NAME if run.is_dir() else run)
    except UserFacingError as error:
        return str(error)
    if not found:
        return (
            f"{run}/ holds no {CHECKPOINT_NAME}: is training still running there, or did it "
            "fail? Name another run with --run-dir"
        )
    return None


def source_problem(source: str | Path | None, given_as: str = "--sms-source") -> str | None:
    """The local dataset file given with ``--sms-source`` (or ``SMS_SPAM_SOURCE``)."""
    if source is None or Path(source).expanduser().is_file():
        return None
    separator = "" if given_as.endswith("=") else " "
    return f"{given_as}{separator}{source} does not exist"


def local_files_problems(args) -> list[str | None]:
    """The local files ``download`` (and ``pipeline``) are told to use instead of the
    network: the dataset (``--sms-source``) and the weights (``--weights-dir``)."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from gpt.hub import WEIGHTS_DIR_ENV

    fetches_no_dataset = (
        getattr(args, "weights_only", False)  # download --weights-only
        or getattr(args, "csv", None)  # pipeline --csv / --tsv: the user's own texts
        or getattr(args, "tsv", None)
    )
    if fetches_no_dataset:
        source = None
    elif getattr(args, "dataset", None) == "imdb":
        given = getattr(args, "imdb_source", None)
        source = (
            source_problem(given, "--imdb-source")
            if given
            else source_problem(
                os.environ.get(IMDB_SOURCE_ENV_VAR) or None, f"{IMDB_SOURCE_ENV_VAR}="
            )
        )
    elif args.sms_source:
        source = source_problem(args.sms_source)
    else:
        source = source_problem(os.environ.get(SOURCE_ENV_VAR) or None, f"{SOURCE_ENV_VAR}=")
    weights_dir = args.weights_dir or os.environ.get(WEIGHTS_DIR_ENV) or None
    weights = weights_problem(args.model, args.weights, weights_dir) if weights_dir else None
    return [source, weights]


def serve_extra_problem() -> str | None:
    """FastAPI and uvicorn, which ``serve`` runs on: the ``serve`` extra."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return (
        f"{' and '.join(missing)} {verb} not installed, which the server runs on: "
        "pip install -e '.[serve]' (or pip install 'gpt-spam[serve]')"
    )
