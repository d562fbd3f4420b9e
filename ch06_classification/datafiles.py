"""Names of the chapter's data files and its data error.

Every file in the data folder is written through
:mod:`~ch06_classification.safe_files` (``atomic_output`` for one file, ``replace_together``
for the split files, which belong together): a half-written file or a mix of two splits
never appears under the real names, so a crash or Ctrl-C cannot leave behind something a
later step would mistake for good data.
"""

from __future__ import annotations

from ch06_classification.safe_files import atomic_output
from gpt.errors import UserFacingError

__all__ = [
    "CLASS_NAMES",
    "SMS_SPAM_TSV",
    "SOURCE_ENV_VAR",
    "SPLIT_FILES",
    "SPLIT_REPORT",
    "DataError",
    "atomic_output",
]

# The two classes, as the data names them: class 0 and class 1 everywhere (splits, model
# outputs, metrics, plots, the classify command). The book prints ham as "not spam": that
# is only how classify_review displays it (see DISPLAY_NAMES in classifier.py).
CLASS_NAMES = ("ham", "spam")

# A local zip or TSV to use instead of the network, for offline machines.
SOURCE_ENV_VAR = "SMS_SPAM_SOURCE"

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
