"""Names of the chapter's data files, its data error, and a safe way to write a file.

Every file in the data folder is written through :func:`atomic_output`: a half-written
file never appears under its real name, so a crash or Ctrl-C cannot leave behind
something a later step would mistake for good data.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpt.errors import UserFacingError

# The two classes, as the data names them: class 0 and class 1 everywhere (splits, model
# outputs, metrics, plots, the classify command). The book prints ham as "not spam": that
# is only how classify_review displays it (see DISPLAY_NAMES in classifier.py).
CLASS_NAMES = ("ham", "spam")

# The validated collection, as `gpt-spam download` leaves it in the data folder.
SMS_SPAM_TSV = "SMSSpamCollection.tsv"

# What `gpt-spam split` writes next to it.
SPLIT_FILES = {
    "train": "train.csv",
    "validation": "validation.csv",
    "test": "test.csv",
    "test_realistic": "test_realistic.csv",
}
SPLIT_REPORT = "split_report.json"


class DataError(UserFacingError):
    """The dataset is missing, damaged, or not the one this chapter expects."""


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` only if the block succeeds.

    The temporary file lives in the same folder so that ``os.replace`` is a rename, which
    is atomic: readers see either the old file or the complete new one. On any error
    (or interrupt) the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp creates owner-only files; data files are ordinary, world-readable ones.
        temporary_path.chmod(0o644)
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)
