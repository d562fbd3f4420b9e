"""Which precision training and a trained classifier run in: float32, bfloat16, or ``auto``.

bfloat16 keeps float32's range with 8 bits of mantissa instead of 24. Where a device has
native bfloat16 matrix units (``devices.native_bf16``) its matrix multiplications run
several times faster (on the 2-core AMD EPYC this project is measured on: ~815 GFLOP/s
against ~170 in float32), and a classifier's probabilities move in the second or third
decimal; where the units are missing, PyTorch emulates bfloat16, slower than float32.

Classifying in bfloat16 casts the model's weights once (``SpamClassifier.set_precision``),
instead of autocasting every operation: weights are read at half the bytes and nothing is
converted again for each batch.

``auto`` (the default of ``classify`` and ``evaluate``) takes bfloat16 only when all hold:

1. there is enough to classify for casting the weights (once, ~0.1 s for gpt2-small) to
   pay off: at least ``MIN_TOKENS_FOR_BF16`` tokens;
2. the device has native bfloat16 matrix units;
3. on the run's own validation split, bfloat16 gives every message the label float32
   gives it. That check runs once per run and kind of device and is remembered in the run
   folder (``precision-check.json``), so later commands do not redo it.

Otherwise float32. Either way the choice comes with its reason, which the commands print.

Training's ``auto`` (the default of ``train`` and of every experiment row) needs only the
units (2.): training autocasts, so there is no cast of the weights to pay for, and no
trained model yet to check against (``training_precision``). A ``bf16`` asked for where
the units are missing is taken as asked, with a warning: on an AMD EPYC with AVX2 only,
bfloat16 matrix products ran at about 1 GFLOP/s, and training took 7x as long as in
float32.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ch06_classification.speed.devices import DTYPES, native_bf16
from ch06_classification.storage.safe_files import FileReadError, read_json, write_json
from gpt.errors import UserFacingError

if TYPE_CHECKING:
    from ch06_classification.classifying.spam_classifier import SpamClassifier

CHOICES = ("fp32", "bf16", "auto")
NAMES = {"fp32": "float32", "bf16": "bfloat16"}
CHECK_FILE = "precision-check.json"
# Below this many tokens, casting gpt2-small's weights (~0.1 s) costs more than bfloat16
# saves: at ~170 GFLOP/s, float32 spends ~1 ms per token on its 85 M matrix weights.
MIN_TOKENS_FOR_BF16 = 256


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a command runs in, and why."""

    precision: str  # "fp32" or "bf16"
    reason: str
    weighed: bool = True  # False: too little work for bfloat16 to be considered at all

    def describe(self) -> str:
        """E.g. ``bfloat16 (this CPU's AVX-512 BF16 instructions; ...)``."""
        return f"{NAMES[self.precision]} ({self.reason})"


def training_precision(requested: str, device: torch.device) -> PrecisionChoice:
    """The precision to train in on ``device``: ``requested``, or for ``auto`` bfloat16
    where the device has native bfloat16 matrix units and float32 elsewhere.

    The reason of a ``bf16`` that the device would emulate says so: it is slower than float32.
    """
    unit = native_bf16(device)
    if requested == "fp32":
        return PrecisionChoice("fp32", "as asked with --precision")
    if requested == "bf16":
        if unit is not None:
            return PrecisionChoice("bf16", f"as asked with --precision; {unit}")
        return PrecisionChoice(
            "bf16",
            f"as asked with --precision, but this {device.type} has no native bfloat16 "
            "matrix units: PyTorch emulates bfloat16, so training runs slower than in "
            "float32, several times slower on a CPU; --precision auto or fp32 avoids it",
        )
    if requested != "auto":
        raise ValueError(f"precision must be one of {CHOICES}, not {requested!r}")
    if unit is None:
        return PrecisionChoice(
            "fp32",
            f"--precision auto: no native bfloat16 matrix units on this {device.type}, where "
            "bfloat16 would be emulated and slower",
        )
    return PrecisionChoice("bf16", f"--precision auto: {unit}")


@dataclass(frozen=True)
class Agreement:
    """How bfloat16's answers compare with float32's on the same messages."""

    messages: int
    disagreements: int  # messages whose label differs
    max_difference: float  # the largest difference of a class probability


def compare_precisions(classifier: SpamClassifier, encoded: list[list[int]]) -> Agreement:
    """Classify ``encoded`` messages in float32, then in bfloat16; the classifier is left
    in float32."""
    classifier.set_precision("fp32")
    fp32 = classifier.predict_proba_encoded(encoded)
    classifier.set_precision("bf16")
    bf16 = classifier.predict_proba_encoded(encoded)
    classifier.set_precision("fp32")
    return Agreement(
        messages=len(encoded),
        disagreements=int((fp32.argmax(axis=1) != bf16.argmax(axis=1)).sum()),
        max_difference=float(np.abs(fp32 - bf16).max()) if len(encoded) else 0.0,
    )


def choose_precision(
    requested: str,
    device: torch.device,
    tokens: int,
    run_dir: Path,
    check: Callable[[], Agreement | None],
) -> PrecisionChoice:
    """``requested`` itself, or for ``auto`` the faster precision that is safe (see above).

    ``check`` compares the two on the run's validation split (None: no split to compare
    on); it is called only when needed, and its answer is remembered in ``run_dir``.
    """
    if requested in DTYPES:
        return PrecisionChoice(requested, "as asked with --precision")
    if requested != "auto":
        raise ValueError(f"precision must be one of {CHOICES}, not {requested!r}")
    if tokens < MIN_TOKENS_FOR_BF16:
        return PrecisionChoice(
            "fp32",
            f"{tokens} tokens to classify: too few for casting the weights to bfloat16 to pay off",
            weighed=False,
        )
    unit = native_bf16(device)
    if unit is None:
        return PrecisionChoice("fp32", f"no native bfloat16 matrix units on this {device.type}")
    agreement = remembered_agreement(run_dir, device.type)
    if agreement is None:
        agreement = check()
        if agreement is None:
            return PrecisionChoice(
                "fp32",
                f"{unit}, but the run's validation split was not found to check bfloat16 "
                "against float32 on",
            )
        remember_agreement(run_dir, device.type, agreement)
    if agreement.disagreements:
        return PrecisionChoice(
            "fp32",
            f"bfloat16 changes the label of {agreement.disagreements} of the run's "
            f"{agreement.messages} validation messages",
        )
    return PrecisionChoice(
        "bf16",
        f"{unit}; the same labels as float32 on the run's {agreement.messages} validation "
        f"messages, probabilities within {agreement.max_difference:.3f}",
    )


def remembered_agreement(run_dir: Path, device_type: str) -> Agreement | None:
    """The comparison ``remember_agreement`` recorded for this kind of device, if any."""
    try:
        values = read_json(Path(run_dir) / CHECK_FILE)[device_type]
        return Agreement(
            int(values["messages"]), int(values["disagreements"]), float(values["max_difference"])
        )
    except (FileReadError, ValueError, KeyError, TypeError):  # none yet, or damaged
        return None


def remember_agreement(run_dir: Path, device_type: str, agreement: Agreement) -> None:
    """Record the comparison in the run folder (best effort: a read-only run folder only
    means checking again next time)."""
    path = Path(run_dir) / CHECK_FILE
    try:
        values = read_json(path)
    except FileReadError:  # none yet, or damaged: replaced
        values = {}
    values = values if isinstance(values, dict) else {}
    values[device_type] = asdict(agreement)
    with suppress(OSError):
        write_json(path, values)


def run_validation_texts(run_dir: Path, data_dirs: list[Path]) -> list[str] | None:
    """The validation messages of the split ``run_dir`` was trained on: from the first of
    ``data_dirs`` whose training split is the run's (by the fingerprints it recorded)."""
    # Imported to read a run's validation split: no pandas for a quick classify.
    from ch06_classification.sources.split_files import read_split, text_fingerprints
    from ch06_classification.storage.datafiles import SPLIT_FILES
    from ch06_classification.storage.runs import read_training_texts

    trained_on = read_training_texts(run_dir)
    if trained_on is None:
        return None
    for data_dir in data_dirs:
        train, validation = (data_dir / SPLIT_FILES[s] for s in ("train", "validation"))
        if not (train.is_file() and validation.is_file()):
            continue
        try:
            if set(text_fingerprints(read_split(train)["Text"])) != trained_on:
                continue
            return read_split(validation)["Text"].tolist()
        except (UserFacingError, OSError):  # a damaged split is not the run's split
            continue
    return None


def set_classifier_precision(
    classifier: SpamClassifier,
    requested: str,
    tokens: int,
    run_dir: Path,
    data_dirs: list[Path] = (),
    log: Callable[[str], None] | None = None,
) -> PrecisionChoice:
    """Choose the precision for classifying ``tokens`` tokens with ``classifier``, a run's,
    and set it. The validation split is looked for in ``data_dirs``, then where training
    found its data (``log`` is told when the one-time check runs)."""

    def check() -> Agreement | None:
        texts = run_validation_texts(
            run_dir, [*data_dirs, *recorded_data_dirs(classifier, run_dir)]
        )
        if texts is None:
            return None
        if log is not None:
            log(
                f"checking bfloat16 against float32 on the run's {len(texts)} validation "
                "messages (once for this run and device) ..."
            )
        return compare_precisions(classifier, [classifier.encode(text) for text in texts])

    choice = choose_precision(requested, classifier.device, tokens, run_dir, check)
    classifier.set_precision(choice.precision)
    return choice


def recorded_data_dirs(classifier: SpamClassifier, run_dir: Path) -> list[Path]:
    """Where training read its splits: its ``data_dir`` as recorded, and, if that is a
    relative path, also relative to the folder above ``runs/`` (a run made elsewhere)."""
    settings = classifier.info.extra.get("settings", {})
    recorded = settings.get("data_dir") if isinstance(settings, dict) else None
    if not isinstance(recorded, str):
        return []
    path = Path(recorded)
    return [path] if path.is_absolute() else [path, run_dir.parent.parent / path]
