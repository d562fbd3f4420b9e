"""Command-line options that several steps share, defined once.

Each ``add_*`` function declares a group of options on a parser; a step's parser and
``pipeline``'s call the same function, so an option means the same everywhere, and
:func:`option_arguments` turns the values back into the step's command line.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from ch06_classification.finetuning.settings import TrainingSettings, knobs, parse_knob
from gpt.config import PRESETS
from gpt.hub import WEIGHTS_DIR_ENV


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: the folder that holds the dataset and its splits."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        metavar="DIR",
        help="folder for the SMS Spam Collection and its splits (default: %(default)s)",
    )


def add_run_data_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` for a step that reads a run: without ``--run-dir``, the run trained on
    it is the one used (a plain ``classify`` of an SMS does not answer with the model of
    one's own CSV, though it may be the latest run)."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        metavar="DIR",
        help="without --run-dir, use the latest run trained on this data folder, if there is "
        "one, else the latest run (default: %(default)s)",
    )


def add_sms_source_option(parser: argparse.ArgumentParser) -> None:
    """``--sms-source``: a local copy of the dataset instead of the download."""
    parser.add_argument(
        "--sms-source",
        metavar="PATH",
        help=(
            "use this local sms_spam_collection.zip, or the SMSSpamCollection file inside "
            "it, instead of downloading (default: $SMS_SPAM_SOURCE if set)"
        ),
    )


def add_dataset_option(parser: argparse.ArgumentParser) -> None:
    """``--dataset``: which known dataset ``download`` fetches and ``split`` splits."""
    parser.add_argument(
        "--dataset",
        choices=["sms", "imdb"],
        help="sms: the SMS Spam Collection (the chapter's); imdb: the 50,000 labelled IMDB "
        "movie reviews of the book's bonus (aclImdb_v1.tar.gz, 84 MB), split 35,000 / 5,000 "
        "/ 10,000 as the bonus does (default: sms)",
    )


def add_imdb_source_option(parser: argparse.ArgumentParser) -> None:
    """``--imdb-source``: a local copy of the IMDB archive instead of the download."""
    parser.add_argument(
        "--imdb-source",
        metavar="PATH",
        help="with --dataset imdb: use this local aclImdb_v1.tar.gz instead of downloading "
        "(default: $IMDB_SOURCE if set)",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights`` and ``--weights-dir``: which GPT-2, starting from what."""
    parser.add_argument(
        "--model",
        choices=list(PRESETS),
        default="gpt2-small",
        help="GPT-2 size (default: %(default)s, 124M parameters)",
    )
    add_weights_option(parser)
    add_weights_dir_option(parser)


def add_weights_option(
    parser: argparse.ArgumentParser,
    help: str = (
        "start from OpenAI's pretrained weights, or from a random initialisation of the "
        "same shape, which needs no download (default: %(default)s)"
    ),
) -> None:
    """``--weights``: pretrained or random (``help`` says what it means to the step)."""
    parser.add_argument(
        "--weights", choices=["pretrained", "random"], default="pretrained", help=help
    )


def add_weights_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--weights-dir``: local OpenAI weights instead of the download."""
    parser.add_argument(
        "--weights-dir",
        metavar="PATH",
        help=(
            "a folder (or file) holding the model's model.safetensors, instead of downloading "
            f"it from the Hugging Face Hub (default: ${WEIGHTS_DIR_ENV} if set)"
        ),
    )


PRECISION_HELP = (
    "compute the matrix multiplications in float32 or bfloat16 (autocast; weights, "
    "gradients and optimizer state stay float32); auto: bfloat16 where the CPU or GPU has "
    "native bfloat16 matrix units (Intel AMX, AVX-512 BF16, Arm BF16; NVIDIA from Ampere "
    "on), else float32, and training says which; elsewhere bfloat16 is emulated, slower "
    "than float32 (default: %(default)s)"
)
CLASSIFYING_PRECISION_HELP = (
    "compute in float32 or bfloat16 (the weights cast once); auto: bfloat16 where the CPU "
    "or GPU has native bfloat16 matrix units, there is enough to classify, and it gives "
    "float32's labels on the run's validation split (checked once per run, remembered in "
    "its folder), else float32 (default: %(default)s)"
)


def add_precision_option(
    parser: argparse.ArgumentParser, help: str | None = None, *, classifying: bool = False
) -> None:
    """``--precision``: fp32, bf16, or ``auto`` (the default), the same choices everywhere.

    Training autocasts to bfloat16 (``PRECISION_HELP``); the commands that classify with a
    trained model (``classifying=True``) cast its weights, and their ``auto`` also checks
    bfloat16's labels against float32's (``ch06_classification/speed/precision.py``). ``help``
    replaces the text.
    """
    default_help = CLASSIFYING_PRECISION_HELP if classifying else PRECISION_HELP
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        default="auto",
        help=help or default_help,
    )


def add_base_weights_option(parser: argparse.ArgumentParser) -> None:
    """``--weights-dir`` for commands that load a trained model: where its base weights are;
    ``--verify``: hash them again rather than trust the digest remembered for them."""
    parser.add_argument(
        "--weights-dir",
        metavar="PATH",
        help=(
            "a folder (or file) holding the GPT-2 weights the model was fine-tuned from; a "
            "run stores only what training changed, and finds the rest where training found "
            f"it (default: ${WEIGHTS_DIR_ENV} if set, else that file, else the Hugging Face "
            "cache); its SHA-256 must match the one recorded"
        ),
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help=(
            "hash the base weights again (the weights file, or the random base kept in "
            "~/.cache/gpt-spam) instead of trusting the SHA-256 remembered while the file's "
            "size and times stay the same, which bytes changed by a failing disk do"
        ),
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=device_name,
        default="auto",
        help="auto (CUDA, then Apple MPS, then CPU), or e.g. cpu, cuda:1 (default: %(default)s)",
    )


def add_run_dir_option(parser: argparse.ArgumentParser, *, reading: bool = True) -> None:
    """``--run-dir`` (alias ``--checkpoint``): the run folder a step reads, or ``train`` writes.

    The same option in every step: a folder under ``runs/`` holding ``model.safetensors``
    (its path may be given instead of the folder's).
    """
    if reading:
        help_text = (
            "the training run to use: its folder, or its model.safetensors (default: the "
            "latest finished run in runs/ trained on --data-dir, else the latest)"
        )
    else:
        help_text = "the run folder to create (default: a new runs/<timestamp>/ folder)"
    flags = ["--run-dir", "--checkpoint"] if reading else ["--run-dir"]
    parser.add_argument(*flags, dest="run_dir", type=Path, metavar="DIR", help=help_text)


def add_seed_option(parser: argparse.ArgumentParser) -> None:
    """``--seed``: the random seed of the split and of training, the book's 123 for both."""
    parser.add_argument(
        "--seed",
        type=int,
        default=123,
        help="random seed: which ham messages are kept and how rows are shuffled (split), "
        "the new head and the batch order (train) (default: %(default)s, the book's)",
    )


def add_split_options(parser: argparse.ArgumentParser) -> None:
    """What ``split`` splits (the SMS collection, or a CSV/TSV file of labelled texts) and
    how: balancing, fractions, stratification, ``--dedupe`` (besides ``--seed``)."""
    own = parser.add_argument_group(
        "your own data",
        "split a file of labelled texts instead of the SMS Spam Collection: any number of "
        "classes, named by the label column (class ids in sorted order)",
    )
    source = own.add_mutually_exclusive_group()
    source.add_argument(
        "--csv",
        type=Path,
        metavar="PATH",
        help="a UTF-8 CSV file with a header line, one labelled text per row",
    )
    source.add_argument(
        "--tsv",
        type=Path,
        metavar="PATH",
        help="the same as a tab-separated file without quoting (a '\"' is an ordinary character)",
    )
    own.add_argument(
        "--text-column",
        default="text",
        metavar="NAME",
        help="the column that holds the texts (default: %(default)s)",
    )
    own.add_argument(
        "--label-column",
        default="label",
        metavar="NAME",
        help="the column that holds the labels (default: %(default)s)",
    )
    parser.add_argument(
        "--fractions",
        type=split_fractions,
        metavar="TRAIN,VAL,TEST",
        help="the shares of the training, validation and test splits, summing to 1 "
        "(default: 0.7,0.1,0.2, the book's)",
    )
    parser.add_argument(
        "--balance",
        choices=["none", "undersample"],
        help="undersample: cut every class to the size of the smallest, the book's balancing "
        "generalised, and write test_realistic.csv with the collection's class shares; none: "
        "keep every row (default: undersample for the SMS collection, none for IMDB and your "
        "own data)",
    )
    parser.add_argument(
        "--split-method",
        choices=["stratified", "random"],
        help="stratified: cut each class at the fractions, so every split keeps the class "
        "shares; random: shuffle everything once and cut, the book's way (default: random "
        "for SMS and IMDB, as the book and its bonus cut them; stratified for your own data)",
    )
    parser.add_argument(
        "--dedupe",
        action="store_true",
        help=(
            "drop repeated messages (keeping the first) before balancing, so that no text "
            "is in two splits (default: off, as in the book)"
        ),
    )


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """What ``train`` fine-tunes and how: an option for each knob ``TrainingSettings``
    declares (its help, choices and range are declared there, once), besides the model,
    data, seed and device options, which more steps share."""

    defaults = {f.name: f.default for f in fields(TrainingSettings)}
    for name, declared in knobs().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(defaults[name], bool):  # a switch, off by default
            parser.add_argument(flag, action="store_true", help=declared.help)
            continue
        parser.add_argument(
            flag,
            type=None if declared.range is None else knob_type(declared),
            choices=declared.choices,
            default=defaults[name],
            metavar=declared.metavar,
            help=f"{declared.help} (default: %(default)s)",
        )


@functools.cache  # one per knob: steps that share an option share its type
def knob_type(declared: Any) -> Callable[[str], Any]:
    """An argparse type that reads a ``TrainingSettings`` knob's number and checks its range."""

    def parse(text: str) -> Any:
        try:
            return parse_knob(declared, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def option_arguments(
    add_options: Callable[[argparse.ArgumentParser], None], args: argparse.Namespace
) -> list[str]:
    """The command-line arguments that give a step the values ``args`` holds for the
    options that ``add_options`` declares; options left at their default are left out."""
    declared = argparse.ArgumentParser(add_help=False)
    add_options(declared)
    arguments: list[str] = []
    for action in declared._actions:  # argparse keeps its declared options here
        value = getattr(args, action.dest, action.default)
        if value == action.default or value is None:
            continue
        flag = action.option_strings[0]
        if isinstance(value, bool):  # a switch such as --dedupe
            arguments.append(flag)
        else:
            arguments += [flag, str(value)]
    return arguments


def add_threshold_option(parser: argparse.ArgumentParser) -> None:
    """``--threshold``: the spam probability from which a message is called spam (two
    classes only: with more, each message gets its most probable class)."""
    parser.add_argument(
        "--threshold",
        type=probability,
        help="spam (class 1) when its probability is at least this (default: 0.5); for "
        "two-class models only: with more classes, each text gets its most probable class",
    )


def add_classifying_options(parser: argparse.ArgumentParser) -> None:
    """``--threshold`` and ``--batch-size``: how a trained model classifies messages."""
    add_threshold_option(parser)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="messages classified per batch (default: %(default)s)",
    )


def split_fractions(value: str) -> str:
    """An argparse type: three positive shares that sum to 1, e.g. ``0.8,0.1,0.1`` (kept
    as written, so that ``pipeline`` passes it on as given; see ``parse_fractions``)."""
    parse_fractions(value)
    return value


def parse_fractions(value: str) -> tuple[float, float, float]:
    """``TRAIN,VAL,TEST`` as three floats; ``argparse.ArgumentTypeError`` unless they are
    three finite numbers above 0 that sum to 1."""
    parts = value.split(",")
    shares = [share for part in parts if (share := _finite(float, part)) is not None and share > 0]
    if len(parts) != 3 or len(shares) != 3 or abs(sum(shares) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(
            f"expected three numbers above 0 that sum to 1, e.g. 0.7,0.1,0.2, not {value!r}"
        )
    return shares[0], shares[1], shares[2]


Number = TypeVar("Number", int, float)


def number_in_range(
    kind: type[Number], expected: str, accepts: Callable[[Number], bool]
) -> Callable[[str], Number]:
    """An argparse type: a ``kind`` (``int`` or ``float``) for which ``accepts`` holds.

    Anything else is refused with "expected <expected>, not '<value>'": text that is not
    a number, and, for every option alike, NaN and infinity (``float`` reads "nan" and
    "inf", and NaN would slip through any range check written as ``not low <= x``).
    """

    def parse(value: str) -> Number:
        number = _finite(kind, value)
        if number is None or not accepts(number):
            raise argparse.ArgumentTypeError(f"expected {expected}, not {value!r}")
        return number

    return parse


# The options' ranges, one checker each (the same object wherever an option is declared).
positive_int = number_in_range(int, "a whole number of at least 1", lambda n: n >= 1)
positive_float = number_in_range(float, "a number greater than 0", lambda x: x > 0)
non_negative_float = number_in_range(float, "a number of at least 0", lambda x: x >= 0)
dropout_rate = number_in_range(float, "a number from 0 to below 1", lambda x: 0 <= x < 1)
probability = number_in_range(float, "a number between 0 and 1", lambda x: 0 <= x <= 1)


def _finite(kind: type[Number], value: str) -> Number | None:
    """``value`` read as a ``kind``, or None if it is not a finite one."""
    try:
        number = kind(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def device_name(value: str) -> str:
    """An argparse type: ``auto``, or a device that PyTorch can compute on, on this machine."""
    if value == "auto":
        return value  # decided when the command runs; --help need not load PyTorch
    # Imported when --device names one: --help needs no device checks.
    from ch06_classification.speed.devices import pick_device
    from gpt.errors import UserFacingError

    try:
        pick_device(value)
    except UserFacingError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value
