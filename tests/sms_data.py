"""Synthetic stand-ins for the SMS Spam Collection, so most tests need no real data, and
where the real one is for those that do."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from ch06_classification.sources.sms import EXPECTED_CLASS_COUNTS, SOURCE_ENV_VAR

# The real dataset: where $SMS_SPAM_SOURCE says (CI sets it), else ../shared/data.
SMS_SPAM_ZIP = Path(
    os.environ.get(SOURCE_ENV_VAR)
    or Path(__file__).resolve().parents[2] / "shared/data/sms_spam_collection.zip"
)
# Why a test that needs the real dataset skips: the same words for every one of them, so
# that the end of the run counts them on one line (conftest.py).
NO_DATASET = f"set {SOURCE_ENV_VAR} to the dataset zip to run them (no file at {SMS_SPAM_ZIP})"


def real_dataset() -> Path:
    """The real dataset's zip; the calling test skips (:data:`NO_DATASET`) without it."""
    import pytest  # only tests call this; the helpers above serve other code too

    if not SMS_SPAM_ZIP.is_file():
        pytest.skip(NO_DATASET)
    return SMS_SPAM_ZIP


def synthetic_collection(
    ham: int = EXPECTED_CLASS_COUNTS["ham"], spam: int = EXPECTED_CLASS_COUNTS["spam"]
) -> bytes:
    """A TSV shaped like the real collection: by default it passes validation.

    Like the real file it has no final newline and texts with `"` characters, including
    one that opens with a quote that closes on a later line, which pandas' default
    quoting would read as a single field spanning two rows.
    """
    lines = [f"ham\tSee you at {i}" for i in range(ham)]
    lines[0] = 'ham\t"Quoted from the start,'
    lines[1] = 'ham\tclosed here" later, ok'
    lines += [f'spam\tWIN a "prize" now! Text {i} to 80082' for i in range(spam)]
    return "\n".join(lines).encode("utf-8")


def zip_archive(members: dict[str, bytes]) -> bytes:
    """A zip archive holding ``members`` (name -> content), as bytes: the same bytes in
    every process (each member dated 2011-01-01, not now), so that parallel test workers
    (pytest-xdist) collect tests with the same ids."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            member = zipfile.ZipInfo(name, date_time=(2011, 1, 1, 0, 0, 0))
            archive.writestr(member, content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


# A valid collection and the zip it comes in, as the UCI site serves it.
VALID_TSV = synthetic_collection()
VALID_ZIP = zip_archive({"readme": b"about the data", "SMSSpamCollection": VALID_TSV})
