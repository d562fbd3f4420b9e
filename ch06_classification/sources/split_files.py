"""The split files: balance, split, check for leakage, write and read back, for any data.

The book's recipe (``ch06_classification/splits.py``): keep all 747 spam messages and as
many randomly chosen ham messages, then shuffle and cut the 1,494 rows 70/10/20 into
training, validation and test sets.
Two things are added here:

* a *realistic* test set, with spam as rare as it is in the whole collection (13.4 %),
  because a balanced test set overstates how precise the classifier is in practice;
* a leakage check: the collection holds many exact duplicates (the same spam sent to
  many people), so some validation and test messages also appear in training.
  ``dedupe=True`` removes the duplicates before anything is split.

The same code splits any labelled texts (:func:`split_labelled_texts`): any number of
classes, named by the data; balanced by undersampling (the book's balancing, every class
cut to the size of the smallest) or not at all; cut at any fractions, within each class
(stratified: every split keeps the classes' shares) or, as the book does, after one
shuffle of everything. The SMS recipe is one setting of it (:func:`make_splits`). Class
ids follow the order of the class names: the split report records them as ``id2label``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd

from ch06_classification.classifier import CLASS_NAMES
from ch06_classification.splits import random_split
from ch06_classification.storage.datafiles import (
    SPLIT_FILES,
    SPLIT_REPORT,
    DataError,
    class_names_from_id2label,
    id2label,
)
from ch06_classification.storage.printable import NAME_WIDTH, listed, one_line, quoted
from ch06_classification.storage.safe_files import (
    FileReadError,
    file_exists,
    read_json,
    replace_together,
    settle,
)

Balance = Literal["none", "undersample"]
SplitMethod = Literal["stratified", "random"]
Dataset = Literal["sms", "imdb", "own"]  # the SMS Spam Collection, IMDB reviews, a user's file
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)  # training, validation, test: the book's


class Splits(NamedTuple):
    """The sets the classifier is trained and evaluated on (``Label`` is the class id).

    ``test_realistic`` exists where balancing left rows out: the test set topped up with
    them to the collection's class shares. None otherwise (the test set already has them).
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    test_realistic: pd.DataFrame | None


def undersample(df: pd.DataFrame, class_names: Sequence[str], seed: int = 123) -> pd.DataFrame:
    """:func:`create_balanced_dataset` for any number of classes: each class cut to as many
    randomly chosen rows as the smallest class has, the classes in the order of
    ``class_names``, each row keeping its index in ``df``.

    With the SMS collection's classes, ("ham", "spam"), the same rows in the same order as
    the book's function.
    """
    groups = [df[df["Label"] == name] for name in class_names]
    smallest = min(len(group) for group in groups)
    return pd.concat(
        [
            group.sample(smallest, random_state=seed) if len(group) > smallest else group
            for group in groups
        ]
    )


def stratified_split(
    df: pd.DataFrame,
    train_frac: float = 0.7,
    validation_frac: float = 0.1,
    seed: int = 123,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`random_split` within each class (``Label``), so that every split keeps the
    classes' shares; each split is then shuffled (seeded) so that the classes mix.

    A class's cut points are rounded to whole rows before they are floored, unlike the
    book's ``int(len(df) * frac)``: 30 rows x 0.7 is 20.999999999999996 in floating point,
    and the book's way would give that class 20 training rows instead of 21.
    """
    parts = []
    for _, group in df.groupby("Label", sort=True):
        group = group.sample(frac=1, random_state=seed).reset_index(drop=True)
        train_end = int(round(len(group) * train_frac, 6))
        validation_end = train_end + int(round(len(group) * validation_frac, 6))
        parts.append((group[:train_end], group[train_end:validation_end], group[validation_end:]))
    return tuple(  # type: ignore[return-value]
        pd.concat([part[i] for part in parts])
        .sample(frac=1, random_state=seed)
        .reset_index(drop=True)
        for i in range(3)
    )


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
    return realistic_test_set(
        test_df,
        left_out_ham,
        train_df,
        {"ham": 1 - spam_share, "spam": spam_share},
        CLASS_NAMES,
        seed,
    )


def realistic_test_set(
    test_df: pd.DataFrame,
    left_out: pd.DataFrame,
    train_df: pd.DataFrame,
    shares: Mapping[str, float],
    class_names: Sequence[str],
    seed: int = 123,
) -> pd.DataFrame:
    """The test set topped up with rows that balancing left out (``Label`` still a name)
    until each class has its ``shares`` of it, as in the whole collection.

    Rows can only be added: the class that is scarcest for its share sets the size, and the
    others are topped up to match (capped by what is left). Neither the test rows nor the
    added ones may have their text in training.
    """
    unseen_test = test_df[~texts_seen_in(test_df, train_df)]
    unseen_left_out = left_out[~texts_seen_in(left_out, train_df)]
    counts = {c: int((unseen_test["Label"] == c).sum()) for c in range(len(class_names))}
    shared = [c for c in counts if shares.get(class_names[c], 0) > 0]
    if not shared:
        return unseen_test.reset_index(drop=True)
    # The class whose test rows are the most for its share: every other class gets
    # count[c] == count[r] * share[c] / share[r] (for SMS: ham = spam * (1 - s) / s).
    r = max(shared, key=lambda c: counts[c] / shares[class_names[c]])
    added = []
    for c in shared:
        if c == r:
            continue
        wanted = round(counts[r] * shares[class_names[c]] / shares[class_names[r]])
        pool = unseen_left_out[unseen_left_out["Label"] == class_names[c]]
        number = min(max(wanted - counts[c], 0), len(pool))
        added.append(pool.sample(number, random_state=seed).assign(Label=c))
    return pd.concat([unseen_test, *added], ignore_index=True)


def make_splits(df: pd.DataFrame, seed: int = 123, dedupe: bool = False) -> Splits:
    """Balance the raw collection (``Label`` is "ham"/"spam") and split it, as the book.

    ``dedupe`` keeps only the first message of each text, before balancing, so that no
    text can end up in two splits. The realistic test set copies the spam share of
    ``df`` as given, duplicates included: that is how often spam arrives.
    """
    return split_labelled_texts(
        df, CLASS_NAMES, balance="undersample", method="random", dedupe=dedupe, seed=seed
    )


def split_labelled_texts(
    df: pd.DataFrame,
    class_names: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    balance: Balance = "none",
    method: SplitMethod = "stratified",
    dedupe: bool = False,
    seed: int = 123,
) -> Splits:
    """Split labelled texts (``Label`` holds names from ``class_names``) for training.

    ``fractions``: of training, validation and test (the test set takes what is left
    after cutting the first two, as in :func:`random_split`). ``balance="undersample"``
    first cuts every class to the size of the smallest (:func:`undersample`) and adds a
    realistic test set; ``method`` cuts within each class (``stratified``) or after one
    shuffle of everything (``random``, the book's). ``dedupe`` as in :func:`make_splits`.
    """
    shares = df["Label"].value_counts(normalize=True).to_dict()
    if dedupe:
        df = df.drop_duplicates(subset="Text", keep="first")
    used = undersample(df, class_names, seed=seed) if balance == "undersample" else df
    left_out = df.drop(index=used.index)
    used = used.assign(Label=used["Label"].map(label2id(class_names)))
    split = stratified_split if method == "stratified" else random_split
    train_df, validation_df, test_df = split(used, fractions[0], fractions[1], seed=seed)
    _check_every_class_trained(train_df, df, class_names)
    for name, part in (("validation", validation_df), ("test", test_df)):
        if part.empty:
            raise DataError(
                f"the {name} split is empty ({len(used):,} rows cut at fractions "
                f"{', '.join(f'{f:g}' for f in fractions)}): give it a larger fraction"
            )
    test_realistic_df = None
    if balance == "undersample":
        test_realistic_df = realistic_test_set(
            test_df, left_out, train_df, shares, class_names, seed=seed
        )
    return Splits(train_df, validation_df, test_df, test_realistic_df)


def label2id(class_names: Sequence[str]) -> dict[str, int]:
    """Class name to class id: the position of the name in ``class_names``."""
    return {name: class_id for class_id, name in enumerate(class_names)}


def _check_every_class_trained(
    train_df: pd.DataFrame, df: pd.DataFrame, class_names: Sequence[str]
) -> None:
    trained = set(train_df["Label"])
    for class_id, name in enumerate(class_names):
        if class_id not in trained:
            rows = int((df["Label"] == name).sum())
            raise DataError(
                f"class {quoted(name)} has {rows:,} row{'s' if rows != 1 else ''}, too few for "
                "one to land in the training split: give it more rows, or remove it"
            )


def describe_split(
    df: pd.DataFrame,
    train_df: pd.DataFrame | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, Any]:
    """Row and class counts of one split (``Label`` holds class ids), and how many of its
    rows repeat a training text, in all and per class."""
    labels = df["Label"]
    summary: dict[str, Any] = {
        "rows": len(df),
        "classes": {name: int((labels == i).sum()) for i, name in enumerate(class_names)},
        "distinct_texts": int(df["Text"].nunique()),
    }
    if train_df is not None:
        seen = texts_seen_in(df, train_df)
        summary["seen_in_training"] = int(seen.sum())
        summary["seen_in_training_by_class"] = {
            name: int((seen & (labels == i)).sum()) for i, name in enumerate(class_names)
        }
    return summary


def split_report(
    df: pd.DataFrame,
    splits: Splits,
    seed: int,
    dedupe: bool,
    class_names: Sequence[str] = CLASS_NAMES,
    **settings: Any,
) -> dict[str, Any]:
    """Everything worth knowing about how ``df`` became ``splits``, as plain JSON values.

    ``settings``: how it was split (fractions, balance, method, where the data came from).
    """
    counts = df["Label"].value_counts()
    sets = {name: split for name, split in splits._asdict().items() if split is not None}
    used = pd.concat([splits.train, splits.validation, splits.test])
    return {
        "seed": seed,
        "dedupe": dedupe,
        **settings,
        "id2label": id2label(class_names),
        "collection": {
            "rows": len(df),
            "classes": {name: int(counts.get(name, 0)) for name in class_names},
            "distinct_texts": int(df["Text"].nunique()),
        },
        "balanced" if settings.get("balance") == "undersample" else "used": describe_split(
            used, class_names=class_names
        ),
        "splits": {
            "train": describe_split(splits.train, class_names=class_names),
            **{
                name: describe_split(split_df, splits.train, class_names)
                for name, split_df in sets.items()
                if name != "train"
            },
        },
    }


def write_splits(
    df: pd.DataFrame,
    data_dir: Path,
    seed: int = 123,
    dedupe: bool = False,
    class_names: Sequence[str] = CLASS_NAMES,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    balance: Balance = "undersample",
    method: SplitMethod = "random",
    dataset: Dataset = "sms",
    source: str | None = None,
) -> dict[str, Any]:
    """Split ``df`` (by default the SMS collection, the book's way), write the CSVs and the
    JSON report, return the report.

    The report records what ``df`` is (``dataset``: "sms", "imdb", or "own" texts from the
    file ``source``), so that a command that splits for you can tell whose split a folder
    holds (:func:`split_origin`).

    Same ``df`` and settings, same bytes in every file: the row order is fixed by the
    seed and nothing time- or machine-dependent is written. The files replace the
    previous ones together (an interrupted split leaves the previous split, whole), and
    the report records each CSV's SHA-256, which :func:`read_split` checks. Without
    balancing there is no realistic test set: one left by an earlier split is removed.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    splits = split_labelled_texts(df, class_names, fractions, balance, method, dedupe, seed)
    settings = {"fractions": list(fractions), "balance": balance, "method": method}
    origin = {"dataset": dataset, **({"source": source} if source else {})}
    report = split_report(df, splits, seed, dedupe, class_names, **settings, **origin)
    with replace_together(data_dir) as staging:
        for name, split_df in splits._asdict().items():
            if split_df is not None:
                path = staging / SPLIT_FILES[name]
                split_df[["Label", "Text"]].to_csv(path, index=False, lineterminator="\n")
        report["files"] = {path.name: _sha256(path) for path in sorted(staging.iterdir())}
        text = json.dumps(report, indent=2) + "\n"
        (staging / SPLIT_REPORT).write_text(text, encoding="utf-8")
    if splits.test_realistic is None:
        (data_dir / SPLIT_FILES["test_realistic"]).unlink(missing_ok=True)
    return report


def read_class_names(data_dir: str | Path) -> tuple[str, ...]:
    """The class names of the splits in ``data_dir``: the split report's ``id2label``, or
    the SMS collection's ("ham", "spam") for splits without one (CSVs of the user's own)."""
    report_path = Path(data_dir) / SPLIT_REPORT
    if not file_exists(report_path):
        return CLASS_NAMES
    report = _read_report(report_path)
    if "id2label" not in report:
        return CLASS_NAMES  # written before splits recorded their classes: SMS's
    try:
        return class_names_from_id2label(report["id2label"])
    except ValueError as error:
        raise DataError(f"{report_path} is damaged ({error}): run `gpt-spam split` again") from None


def evaluation_splits(data_dir: str | Path) -> list[str]:
    """The splits of ``data_dir`` to evaluate on: train, validation, test, and the realistic
    test set where the split made one."""
    data_dir = Path(data_dir)
    names = ["train", "validation", "test"]
    realistic = SPLIT_FILES["test_realistic"]
    report_path = data_dir / SPLIT_REPORT
    listed = _read_report(report_path).get("files", {}) if file_exists(report_path) else None
    if (data_dir / realistic).is_file() and (listed is None or realistic in listed):
        names.append("test_realistic")
    return names


class SplitOrigin(NamedTuple):
    """What the split in a data folder was made from (see :func:`split_origin`)."""

    dataset: str  # a Dataset: "sms", "imdb" or "own"
    source: str | None = None  # "own": the file as given to `gpt-spam split`, where recorded

    def describe(self) -> str:
        """E.g. "the SMS Spam Collection", or "tickets.csv"."""
        if self.dataset == "sms":
            return "the SMS Spam Collection"
        if self.dataset == "imdb":
            return "the IMDB reviews"
        return self.source or "texts of your own"

    def is_of(self, dataset: Dataset, source: str | Path | None = None) -> bool:
        """Whether this is a split of ``dataset`` (for "own", of the file ``source``)."""
        if self.dataset != dataset:
            return False
        if dataset != "own":
            return True
        return None not in (self.source, source) and (
            Path(self.source).resolve() == Path(source).resolve()  # type: ignore[arg-type]
        )


def split_origin(data_dir: str | Path) -> SplitOrigin | None:
    """What the split in ``data_dir`` was made from, as its report records it; None where
    the folder holds no split.

    Split CSVs without a report are texts of your own (see :func:`read_split`). A report
    written before reports named their dataset is the SMS collection's, unless it names
    a source (``imdb``, or the user's file) or classes other than ham and spam.
    """
    data_dir = Path(data_dir)
    settle(data_dir)  # finish an interrupted `gpt-spam split` first
    report_path = data_dir / SPLIT_REPORT
    if not report_path.is_file():
        held = any((data_dir / name).is_file() for name in SPLIT_FILES.values())
        return SplitOrigin("own") if held else None
    report = _read_report(report_path)
    dataset, source = report.get("dataset"), report.get("source")
    if dataset is None:
        if source == "imdb":
            dataset, source = "imdb", None
        elif source is None and read_class_names(data_dir) == CLASS_NAMES:
            dataset = "sms"
        else:
            dataset = "own"
    return SplitOrigin(str(dataset), source if isinstance(source, str) else None)


def missing_split_files(data_dir: str | Path) -> list[str]:
    """The split files that ``data_dir`` should hold and does not: the training, validation
    and test CSVs, and any other file its split report lists."""
    data_dir = Path(data_dir)
    report_path = data_dir / SPLIT_REPORT
    listed = _read_report(report_path).get("files", {}) if report_path.is_file() else {}
    wanted = [*(SPLIT_FILES[name] for name in ("train", "validation", "test")), *listed]
    return [name for name in dict.fromkeys(wanted) if not (data_dir / name).is_file()]


def split_fingerprint(data_dir: str | Path) -> dict[str, str]:
    """The SHA-256 of each split file in ``data_dir``, by name: what a result computed from
    the folder's split depends on. As the split report records them (:func:`read_split`
    refuses a file that differs), else computed (CSVs of your own)."""
    data_dir = Path(data_dir)
    settle(data_dir)
    report_path = data_dir / SPLIT_REPORT
    recorded = _read_report(report_path).get("files") if report_path.is_file() else None
    if isinstance(recorded, dict) and recorded:
        return dict(sorted(recorded.items()))
    names = [name for name in SPLIT_FILES.values() if (data_dir / name).is_file()]
    return {name: _sha256(data_dir / name) for name in sorted(names)}


def _read_report(report_path: Path) -> dict[str, Any]:
    try:
        report = read_json(report_path)
    except FileReadError as error:
        raise DataError(f"{error}: run `gpt-spam split` again") from None
    if not isinstance(report, dict):
        raise DataError(f"{report_path} is damaged: run `gpt-spam split` again")
    return report


def read_split(path: Path, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """One CSV written by :func:`write_splits`: ``Label`` as int, ``Text`` exactly as written.

    Checked before anyone spends time on it: UTF-8, the ``Label`` and ``Text`` columns,
    at least one message, labels that are class ids (0 to N-1 for ``class_names``, by
    default those of the folder's split report: 0 ham, 1 spam for the SMS collection), no
    empty text, and, where the folder holds a ``split_report.json``, the very file
    `gpt-spam split` wrote.
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
        if class_names is None:
            class_names = read_class_names(path.parent)
        return _parse_split(raw, class_names)


def check_training_splits(data_dir: str | Path) -> int:
    """Read and check the training, validation and test CSVs before training spends time;
    returns how many messages the training split holds.

    Beyond what :func:`read_split` checks, the training split must hold every class:
    a classifier never shown a spam message cannot learn what spam is.
    """
    data_dir = Path(data_dir)
    path = data_dir / SPLIT_FILES["train"]
    train = read_split(path)
    labels = set(train["Label"])
    for class_id, name in enumerate(read_class_names(data_dir)):
        if class_id not in labels:
            raise DataError(
                f"{path}: no {one_line(name, NAME_WIDTH)} message ({class_id}): nothing to "
                "learn it from"
            )
    for name in ("validation", "test"):
        read_split(data_dir / SPLIT_FILES[name])
    return len(train)


def _parse_split(raw: bytes, class_names: Sequence[str] = CLASS_NAMES) -> pd.DataFrame:
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
        found = listed(df.columns, quote=True) or "none"
        raise DataError(f"needs the columns 'Label' and 'Text' (found {found})")
    if df.empty:
        raise DataError("holds no messages")
    labels = {str(class_id): class_id for class_id in range(len(class_names))}
    unknown = ~df["Label"].isin(labels)
    if unknown.any():
        row = int(unknown.argmax())
        known = listed(f"{i} ({name})" for i, name in enumerate(class_names))
        raise DataError(
            f"row {row + 1} has the label {quoted(df['Label'].iloc[row])}; labels are {known}"
        )
    empty = df["Text"] == ""
    if empty.any():
        raise DataError(f"row {int(empty.argmax()) + 1} has no text")
    return pd.DataFrame({"Label": df["Label"].map(labels).astype("int64"), "Text": df["Text"]})


def _check_against_report(path: Path, raw: bytes) -> None:
    """Refuse a CSV that is not the one ``split_report.json`` beside it describes."""
    report_path = path.parent / SPLIT_REPORT
    if not file_exists(report_path):
        return  # CSVs of the user's own: nothing to check them against
    recorded = _read_report(report_path).get("files", {})
    if not isinstance(recorded, dict):
        raise DataError(f"{report_path} is damaged: run `gpt-spam split` again")
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
