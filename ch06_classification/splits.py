"""Balance the collection, split it for training, and check the splits for leakage.

The book's recipe: keep all 747 spam messages and as many randomly chosen ham messages,
then shuffle and cut the 1,494 rows 70/10/20 into training, validation and test sets.
Two things are added here:

* a *realistic* test set, with spam as rare as it is in the whole collection (13.4 %),
  because a balanced test set overstates how precise the classifier is in practice;
* a leakage check: the collection holds many exact duplicates (the same spam sent to
  many people), so some validation and test messages also appear in training.
  ``dedupe=True`` removes the duplicates before anything is split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from ch06_classification.datafiles import (
    CLASS_NAMES,
    SPLIT_FILES,
    SPLIT_REPORT,
    DataError,
    atomic_output,
)

# The classifier's two outputs: logit 0 is "ham", logit 1 is "spam".
CLASS_IDS = {name: index for index, name in enumerate(CLASS_NAMES)}


class Splits(NamedTuple):
    """The four sets the classifier is trained and evaluated on (``Label`` is 0 or 1)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    test_realistic: pd.DataFrame


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


def texts_seen_in(df: pd.DataFrame, reference_df: pd.DataFrame) -> pd.Series:
    """For each row of ``df``, whether its exact text occurs anywhere in ``reference_df``.

    A validation or test message that also appears in training measures memory, not
    generalisation: ``texts_seen_in(test_df, train_df).sum()`` counts such rows.
    """
    return df["Text"].isin(reference_df["Text"])


def text_fingerprint(text: str) -> str:
    """The SHA-256 of a message's exact text: what a run records of its training texts."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_fingerprints(texts: Iterable[str]) -> list[str]:
    """The distinct fingerprints of ``texts``, sorted (a set, written as a stable list)."""
    return sorted({text_fingerprint(text) for text in texts})


def fingerprints_seen_in(df: pd.DataFrame, fingerprints: Collection[str]) -> pd.Series:
    """:func:`texts_seen_in` against recorded fingerprints instead of the texts themselves."""
    return df["Text"].map(text_fingerprint).isin(set(fingerprints))


def create_realistic_test_set(
    test_df: pd.DataFrame,
    left_out_ham: pd.DataFrame,
    train_df: pd.DataFrame,
    spam_share: float,
    seed: int = 123,
) -> pd.DataFrame:
    """The test set topped up with unused ham messages until spam is ``spam_share`` of it.

    Balancing left most ham messages unused; drawing on them gives a test set as
    lopsided as real SMS traffic. Neither the test rows nor the added ham may have
    their text in training: a message the model was trained on says nothing about how
    it does on new ones. If too few unused ham messages remain, all of them are added
    and spam ends up more common than ``spam_share``.
    """
    unseen_test = test_df[~texts_seen_in(test_df, train_df)]
    unseen_ham = left_out_ham[~texts_seen_in(left_out_ham, train_df)]
    num_spam = int((unseen_test["Label"] == CLASS_IDS["spam"]).sum())
    num_test_ham = len(unseen_test) - num_spam
    # spam / (spam + ham) == spam_share  <=>  ham == spam * (1 - spam_share) / spam_share
    num_ham_wanted = round(num_spam * (1 - spam_share) / spam_share)
    num_ham_to_add = min(max(num_ham_wanted - num_test_ham, 0), len(unseen_ham))
    added_ham = unseen_ham.sample(num_ham_to_add, random_state=seed).assign(Label=CLASS_IDS["ham"])
    return pd.concat([unseen_test, added_ham], ignore_index=True)


def make_splits(df: pd.DataFrame, seed: int = 123, dedupe: bool = False) -> Splits:
    """Balance the raw collection (``Label`` is "ham"/"spam") and split it.

    ``dedupe`` keeps only the first message of each text, before balancing, so that no
    text can end up in two splits. The realistic test set copies the spam share of
    ``df`` as given, duplicates included: that is how often spam arrives.
    """
    spam_share = float((df["Label"] == "spam").mean())
    if dedupe:
        df = df.drop_duplicates(subset="Text", keep="first")
    balanced_df = create_balanced_dataset(df, seed=seed)
    balanced_df["Label"] = balanced_df["Label"].map(CLASS_IDS)
    left_out_ham = df.drop(index=balanced_df.index).query("Label == 'ham'")
    train_df, validation_df, test_df = random_split(balanced_df, 0.7, 0.1, seed=seed)
    test_realistic_df = create_realistic_test_set(
        test_df, left_out_ham, train_df, spam_share=spam_share, seed=seed
    )
    return Splits(train_df, validation_df, test_df, test_realistic_df)


def describe_split(df: pd.DataFrame, train_df: pd.DataFrame | None = None) -> dict[str, Any]:
    """Row and class counts of one split, and how many of its rows repeat a training text."""
    num_spam = int((df["Label"] == CLASS_IDS["spam"]).sum())
    summary: dict[str, Any] = {
        "rows": len(df),
        "ham": len(df) - num_spam,
        "spam": num_spam,
        "spam_share": round(num_spam / len(df), 4) if len(df) else 0.0,
        "distinct_texts": int(df["Text"].nunique()),
    }
    if train_df is not None:
        seen = texts_seen_in(df, train_df)
        summary["seen_in_training"] = int(seen.sum())
        summary["spam_seen_in_training"] = int((seen & (df["Label"] == CLASS_IDS["spam"])).sum())
    return summary


def split_report(df: pd.DataFrame, splits: Splits, seed: int, dedupe: bool) -> dict[str, Any]:
    """Everything worth knowing about how ``df`` became ``splits``, as plain JSON values."""
    class_counts = df["Label"].value_counts()
    return {
        "seed": seed,
        "dedupe": dedupe,
        "collection": {
            "rows": len(df),
            "ham": int(class_counts.get("ham", 0)),
            "spam": int(class_counts.get("spam", 0)),
            "distinct_texts": int(df["Text"].nunique()),
        },
        "balanced": describe_split(pd.concat([splits.train, splits.validation, splits.test])),
        "splits": {
            "train": describe_split(splits.train),
            **{
                name: describe_split(split_df, splits.train)
                for name, split_df in splits._asdict().items()
                if name != "train"
            },
        },
    }


def write_splits(
    df: pd.DataFrame, data_dir: Path, seed: int = 123, dedupe: bool = False
) -> dict[str, Any]:
    """Split the raw collection ``df``, write the CSVs and the JSON report, return the report.

    Same ``df`` and ``seed``, same bytes in every file: the row order is fixed by the
    seed and nothing time- or machine-dependent is written.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    splits = make_splits(df, seed=seed, dedupe=dedupe)
    for name, split_df in splits._asdict().items():
        with atomic_output(data_dir / SPLIT_FILES[name]) as path:
            split_df[["Label", "Text"]].to_csv(path, index=False, lineterminator="\n")
    report = split_report(df, splits, seed=seed, dedupe=dedupe)
    with atomic_output(data_dir / SPLIT_REPORT) as path:
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def read_split(path: Path) -> pd.DataFrame:
    """One CSV written by :func:`write_splits`: ``Label`` as int, ``Text`` exactly as written."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: run `gpt-spam split` (or scripts/02_split.py) first"
        )
    return pd.read_csv(path, dtype={"Label": "int64", "Text": str}, keep_default_na=False)
