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
import io
import json
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from ch06_classification.datafiles import CLASS_NAMES, SPLIT_FILES, SPLIT_REPORT, DataError
from ch06_classification.safe_files import replace_together, settle

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
    seed and nothing time- or machine-dependent is written. The five files replace the
    previous ones together (an interrupted split leaves the previous split, whole), and
    the report records each CSV's SHA-256, which :func:`read_split` checks.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    splits = make_splits(df, seed=seed, dedupe=dedupe)
    report = split_report(df, splits, seed=seed, dedupe=dedupe)
    with replace_together(data_dir) as staging:
        for name, split_df in splits._asdict().items():
            path = staging / SPLIT_FILES[name]
            split_df[["Label", "Text"]].to_csv(path, index=False, lineterminator="\n")
        report["files"] = {name: _sha256(staging / name) for name in SPLIT_FILES.values()}
        text = json.dumps(report, indent=2) + "\n"
        (staging / SPLIT_REPORT).write_text(text, encoding="utf-8")
    return report


def read_split(path: Path) -> pd.DataFrame:
    """One CSV written by :func:`write_splits`: ``Label`` as int, ``Text`` exactly as written.

    Checked before anyone spends time on it: UTF-8, the ``Label`` and ``Text`` columns,
    at least one message, labels 0 (ham) or 1 (spam), no empty text, and, where the
    folder holds a ``split_report.json``, the very file `gpt-spam split` wrote.
    """
    path = Path(path)
    settle(path.parent)  # finish an interrupted `gpt-spam split` first
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: run `gpt-spam split` (or scripts/02_split.py) first"
        )
    raw = path.read_bytes()
    with _blame(path):
        _check_against_report(path, raw)
        return _parse_split(raw)


def check_training_splits(data_dir: str | Path) -> None:
    """Read and check the training, validation and test CSVs before training spends time.

    Beyond what :func:`read_split` checks, the training split must hold both classes:
    a classifier never shown a spam message cannot learn what spam is.
    """
    data_dir = Path(data_dir)
    path = data_dir / SPLIT_FILES["train"]
    labels = set(read_split(path)["Label"])
    for name, class_id in CLASS_IDS.items():
        if class_id not in labels:
            raise DataError(f"{path}: no {name} message ({class_id}): nothing to learn it from")
    for name in ("validation", "test"):
        read_split(data_dir / SPLIT_FILES[name])


def _parse_split(raw: bytes) -> pd.DataFrame:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = f"byte {error.start:,} is {raw[error.start]:#04x}"
        raise DataError(f"not UTF-8 text ({byte})") from None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError("the file is empty") from None
    except pd.errors.ParserError as error:
        raise DataError(f"not a CSV file ({str(error).strip()})") from None
    missing = [column for column in ("Label", "Text") if column not in df.columns]
    if missing:
        found = ", ".join(map(repr, df.columns[:4])) or "none"
        raise DataError(f"needs the columns 'Label' and 'Text' (found {found})")
    if df.empty:
        raise DataError("holds no messages")
    labels = {str(class_id): class_id for class_id in CLASS_IDS.values()}
    unknown = ~df["Label"].isin(labels)
    if unknown.any():
        row = int(unknown.argmax())
        raise DataError(
            f"row {row + 1} has the label {df['Label'].iloc[row]!r}; "
            f"labels are {', '.join(f'{i} ({name})' for name, i in CLASS_IDS.items())}"
        )
    empty = df["Text"] == ""
    if empty.any():
        raise DataError(f"row {int(empty.argmax()) + 1} has no text")
    return pd.DataFrame({"Label": df["Label"].map(labels).astype("int64"), "Text": df["Text"]})


def _check_against_report(path: Path, raw: bytes) -> None:
    """Refuse a CSV that is not the one ``split_report.json`` beside it describes."""
    report_path = path.parent / SPLIT_REPORT
    if not report_path.is_file():
        return  # CSVs of the user's own: nothing to check them against
    try:
        recorded = json.loads(report_path.read_text(encoding="utf-8")).get("files", {})
    except (ValueError, AttributeError):
        raise DataError(f"{report_path} is damaged: run `gpt-spam split` again") from None
    expected = recorded.get(path.name)
    if expected is not None and expected != hashlib.sha256(raw).hexdigest():
        raise DataError(
            f"not the file `gpt-spam split` wrote with {SPLIT_REPORT} (changed since?): run "
            f"`gpt-spam split` again, or delete {report_path} to use CSVs of your own"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def _blame(path: Path) -> Iterator[None]:
    """Prefix any :class:`DataError` raised in the block with the file it is about."""
    try:
        yield
    except DataError as error:
        raise DataError(f"{path}: {error}") from error
