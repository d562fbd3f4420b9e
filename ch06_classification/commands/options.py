"""Command-line options that several steps share, defined once."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: the folder that holds the dataset and its splits."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        metavar="DIR",
        help="folder for the SMS Spam Collection and its splits (default: %(default)s)",
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


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights`` and ``--weights-dir``: which GPT-2, starting from what."""
    from gpt.config import PRESETS
    from gpt.weights import WEIGHTS_DIR_ENV

    parser.add_argument(
        "--model",
        choices=list(PRESETS),
        default="gpt2-small",
        help="GPT-2 size (default: %(default)s, 124M parameters)",
    )
    parser.add_argument(
        "--weights",
        choices=["pretrained", "random"],
        default="pretrained",
        help=(
            "start from OpenAI's pretrained weights, or from a random initialisation of the "
            "same shape, which needs no download (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--weights-dir",
        metavar="PATH",
        help=(
            "a folder (or file) holding the model's model.safetensors, instead of downloading "
            f"it from the Hugging Face Hub (default: ${WEIGHTS_DIR_ENV} if set)"
        ),
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=device_name,
        default="auto",
        help="auto (CUDA, then Apple MPS, then CPU), or e.g. cpu, cuda:1 (default: %(default)s)",
    )


def add_run_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        help="the training run to use (default: the latest finished one in runs/)",
    )


def add_classifying_options(parser: argparse.ArgumentParser) -> None:
    """``--threshold`` and ``--batch-size``: how a trained model classifies messages."""
    parser.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="spam when the spam probability is at least this (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="messages per batch (default: %(default)s)",
    )


def positive_int(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return number


def probability(value: str) -> float:
    """An argparse type: a number between 0 and 1."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, not {value!r}")
    return number


def positive_float(value: str) -> float:
    """An argparse type: a number greater than 0."""
    number = _float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a number greater than 0, not {value!r}")
    return number


def non_negative_float(value: str) -> float:
    """An argparse type: a number of at least 0."""
    number = _float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, not {value!r}")
    return number


def dropout_rate(value: str) -> float:
    """An argparse type: a probability of dropping, from 0 up to but not including 1."""
    number = _float(value)
    if not 0.0 <= number < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to below 1, not {value!r}")
    return number


def device_name(value: str) -> str:
    """An argparse type: ``auto``, or a device that PyTorch can compute on, on this machine."""
    if value == "auto":
        return value  # decided when the command runs; --help need not load PyTorch
    from ch06_classification.training import pick_device
    from gpt.errors import UserFacingError

    try:
        pick_device(value)
    except UserFacingError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _float(value: str) -> float:
    """``value`` as a finite number, or NaN (which every range check refuses)."""
    try:
        number = float(value)
    except ValueError:
        return float("nan")
    return number if math.isfinite(number) else float("nan")
