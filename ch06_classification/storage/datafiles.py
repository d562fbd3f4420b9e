"""Names of the chapter's data files and its data error.

Every file in the data folder is written through
:mod:`~ch06_classification.storage.safe_files` (``atomic_output`` for one file, ``replace_together``
for the split files, which belong together): a half-written file or a mix of two splits
never appears under the real names, so a crash or Ctrl-C cannot leave behind something a
later step would mistake for good data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ch06_classification.classifier import CLASS_NAMES
from ch06_classification.download import SOURCE_ENV_VAR
from ch06_classification.storage.printable import quoted
from ch06_classification.storage.safe_files import atomic_output
from gpt.errors import UserFacingError

__all__ = [
    "CLASS_NAMES",
    "IMDB_REVIEWS_CSV",
    "IMDB_SOURCE_ENV_VAR",
    "MAX_CLASSES",
    "SMS_SPAM_TSV",
    "SOURCE_ENV_VAR",
    "SPLIT_FILES",
    "SPLIT_REPORT",
    "DataError",
    "atomic_output",
    "class_names_from_id2label",
    "id2label",
]


# A label column with more distinct values than this holds no classes (an id, a text?).
MAX_CLASSES = 1000

# A local aclImdb_v1.tar.gz instead of the network (`download --dataset imdb`).
IMDB_SOURCE_ENV_VAR = "IMDB_SOURCE"

# The validated collection, as `gpt-spam download` leaves it in the data folder.
SMS_SPAM_TSV = "SMSSpamCollection.tsv"

# The validated IMDB reviews, as `gpt-spam download --dataset imdb` leaves them.
IMDB_REVIEWS_CSV = "imdb_reviews.csv"

# What `gpt-spam split` writes next to it.
SPLIT_FILES = {
    "train": "train.csv",
    "validation": "validation.csv",
    "test": "test.csv",
    "test_realistic": "test_realistic.csv",
}
SPLIT_REPORT = "split_report.json"


def id2label(class_names: Sequence[str]) -> dict[str, str]:
    """Class id to name, as Hugging Face's ``config.json`` writes it (ids as JSON keys)."""
    return {str(class_id): name for class_id, name in enumerate(class_names)}


def class_names_from_id2label(values: object) -> tuple[str, ...]:
    """The class names of an ``id2label`` mapping; ``ValueError`` unless its ids are 0..N-1
    and its names N >= 2 different, non-empty strings."""
    if not isinstance(values, dict):
        raise ValueError("id2label is not an object")
    names = tuple(values.get(str(class_id)) for class_id in range(len(values)))
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"id2label {quoted(values)} does not map 0..{len(values) - 1} to names")
    if len(names) < 2 or len(set(names)) < len(names) or len(names) > MAX_CLASSES:
        raise ValueError(
            f"id2label {quoted(values)} does not name 2 to {MAX_CLASSES} different classes"
        )
    return names


class DataError(UserFacingError):
    """The dataset is missing, damaged, or not the one this chapter expects."""


def option(text: str) -> str:
    """How a user gives the options ``text``: as they are, or through make's ``ARGS``."""
    return f'ARGS="{text}"' if os.environ.get("MAKELEVEL") else text
