"""Balance the collection and split it (section 6.2), as the book does.

The collection holds 4,827 ham and 747 spam messages. The book keeps all 747 spam messages
and as many randomly chosen ham ones, then shuffles the 1,494 rows and cuts them 70/10/20
into training, validation and test sets. The split files the pipeline writes, with a
realistic test set, a leakage check and any labelled data besides SMS, are
``ch06_classification/sources/split_files.py``.
"""

from __future__ import annotations

import pandas as pd


def create_balanced_dataset(df: pd.DataFrame, seed: int = 123) -> pd.DataFrame:
    """Every spam message and as many randomly chosen ham ones (the ham first), as the book.

    Labels stay "ham" / "spam", as in the book, whose next line turns them into class ids:
    ``balanced_df["Label"] = balanced_df["Label"].map({"ham": 0, "spam": 1})``.
    The rows keep their index in ``df``, so the ham messages left out can be found later.
    """
    num_spam = int((df["Label"] == "spam").sum())
    ham_subset = df[df["Label"] == "ham"].sample(num_spam, random_state=seed)
    return pd.concat([ham_subset, df[df["Label"] == "spam"]])


def random_split(
    df: pd.DataFrame, train_frac: float = 0.7, validation_frac: float = 0.1, seed: int = 123
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shuffle ``df`` and cut it into training, validation and test sets (the rest)."""
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)
    train_end = int(len(df) * train_frac)
    validation_end = train_end + int(len(df) * validation_frac)
    return df[:train_end], df[train_end:validation_end], df[validation_end:]
