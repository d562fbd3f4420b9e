"""Balancing, splitting, the realistic test set and the leakage check, on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ch06_classification.sources.split_files import (
    describe_split,
    make_splits,
    read_split,
    texts_seen_in,
    write_splits,
)
from ch06_classification.splits import create_balanced_dataset, random_split
from ch06_classification.storage.datafiles import SPLIT_FILES, SPLIT_REPORT, DataError


def raw_frame(labels_and_texts: list[tuple[str, str]]) -> pd.DataFrame:
    """A frame shaped like ``read_sms_spam``'s output."""
    return pd.DataFrame(labels_and_texts, columns=["Label", "Text"])


@pytest.fixture(scope="module")
def collection() -> pd.DataFrame:
    """300 ham and 60 spam messages with repeats, like the real thing (spam is often resent)."""
    ham = [("ham", f"see you at {i % 250}") for i in range(300)]
    spam = [("spam", f"WIN prize {i % 25}, call now") for i in range(60)]
    # Texts that a careless CSV round trip would change.
    ham[:3] = [("ham", 'He said "hi", then left'), ("ham", "NA"), ("ham", " leading space")]
    return raw_frame(ham + spam)


def test_balanced_dataset_keeps_every_spam_and_as_many_random_ham(
    collection: pd.DataFrame,
) -> None:
    balanced = create_balanced_dataset(collection, seed=123)

    # As in the book, the labels are still words; the book maps them to class ids next.
    assert balanced["Label"].value_counts().to_dict() == {"ham": 60, "spam": 60}
    spam_rows = collection.index[collection["Label"] == "spam"]
    assert set(balanced.index[balanced["Label"] == "spam"]) == set(spam_rows)
    # The book's draw exactly: ham sampled with the seed, index kept, ham first.
    expected_ham = collection[collection["Label"] == "ham"].sample(60, random_state=123)
    assert list(balanced.index[:60]) == list(expected_ham.index)
    assert not balanced.index.equals(create_balanced_dataset(collection, seed=7).index)


def test_random_split_gives_the_books_sizes_and_partitions_the_rows() -> None:
    df = pd.DataFrame({"Label": [0, 1] * 747, "Text": [f"m{i}" for i in range(1494)]})

    train, validation, test = random_split(df, 0.7, 0.1, seed=123)

    assert (len(train), len(validation), len(test)) == (1045, 149, 300)
    shuffled = df.sample(frac=1, random_state=123).reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.concat([train, validation, test]), shuffled)


def test_texts_seen_in_matches_exact_texts_only() -> None:
    reference = raw_frame([("ham", "hello"), ("spam", "WIN now"), ("ham", "hello")])
    df = raw_frame(
        [
            ("ham", "hello"),
            ("ham", "Hello"),
            ("spam", "WIN now "),
            ("spam", "WIN now"),
            ("ham", "x"),
        ]
    )

    assert texts_seen_in(df, reference).tolist() == [True, False, False, True, False]


def test_describe_split_counts_planted_duplicates_exactly() -> None:
    train = pd.DataFrame({"Label": [1, 0, 0], "Text": ["a", "b", "c"]})
    test = pd.DataFrame({"Label": [1, 1, 0, 0, 1], "Text": ["a", "a", "x", "b", "y"]})

    assert describe_split(test, train) == {
        "rows": 5,
        "classes": {"ham": 2, "spam": 3},
        "distinct_texts": 4,
        "seen_in_training": 3,
        "seen_in_training_by_class": {"ham": 1, "spam": 2},
    }


def overlapping_texts(first: pd.DataFrame, second: pd.DataFrame) -> set[str]:
    return set(first["Text"]) & set(second["Text"])


def test_without_dedupe_repeated_texts_leak_across_splits(collection: pd.DataFrame) -> None:
    splits = make_splits(collection, seed=123)

    leaked = overlapping_texts(splits.test, splits.train)
    assert leaked  # the planted repeats do land on both sides
    expected = sum(text in leaked for text in splits.test["Text"])
    assert texts_seen_in(splits.test, splits.train).sum() == expected


def test_dedupe_leaves_no_text_in_two_splits(collection: pd.DataFrame) -> None:
    splits = make_splits(collection, seed=123, dedupe=True)
    balanced = [splits.train, splits.validation, splits.test]

    for i, first in enumerate(balanced):
        assert first["Text"].is_unique
        for second in balanced[i + 1 :]:
            assert not overlapping_texts(first, second)
    # 25 distinct spam texts remain, so 25 of each class.
    assert sum(map(len, balanced)) == 50


@pytest.mark.parametrize("dedupe", [False, True])
def test_realistic_test_set(collection: pd.DataFrame, dedupe: bool) -> None:
    splits = make_splits(collection, seed=123, dedupe=dedupe)
    realistic = splits.test_realistic
    unseen_test = splits.test[~texts_seen_in(splits.test, splits.train)]

    assert not overlapping_texts(realistic, splits.train)
    # Its spam is exactly the test set's unseen spam; its ham, the unseen test ham plus
    # ham that balancing left out (never training or validation ham).
    assert sorted(realistic.loc[realistic["Label"] == 1, "Text"]) == sorted(
        unseen_test.loc[unseen_test["Label"] == 1, "Text"]
    )
    ham_texts = set(realistic.loc[realistic["Label"] == 0, "Text"])
    assert set(unseen_test.loc[unseen_test["Label"] == 0, "Text"]) <= ham_texts
    source = collection.drop_duplicates("Text") if dedupe else collection
    left_out = source.drop(index=create_balanced_dataset(source).index)
    assert ham_texts <= set(unseen_test["Text"]) | set(left_out["Text"])
    # Spam is as rare as in the collection (1 in 6), up to rounding one message.
    num_spam = int(realistic["Label"].sum())
    assert abs(len(realistic) - num_spam * 6) <= 1


def test_write_splits_is_byte_identical_for_the_same_seed(
    collection: pd.DataFrame, tmp_path: Path
) -> None:
    names = [*SPLIT_FILES.values(), SPLIT_REPORT]

    write_splits(collection, tmp_path / "a", seed=123)
    write_splits(collection, tmp_path / "b", seed=123)
    write_splits(collection, tmp_path / "c", seed=124)

    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(names)  # no temp files
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train.csv").read_bytes() != (
        tmp_path / "c" / "train.csv"
    ).read_bytes()


def test_written_csvs_read_back_exactly(collection: pd.DataFrame, tmp_path: Path) -> None:
    report = write_splits(collection, tmp_path, seed=123)
    splits = make_splits(collection, seed=123)

    for name, split in splits._asdict().items():
        written = read_split(tmp_path / SPLIT_FILES[name])
        pd.testing.assert_frame_equal(written, split[["Label", "Text"]].reset_index(drop=True))
    assert json.loads((tmp_path / SPLIT_REPORT).read_text()) == report


def test_report_counts(collection: pd.DataFrame, tmp_path: Path) -> None:
    report = write_splits(collection, tmp_path, seed=123, dedupe=True)

    assert report["seed"] == 123 and report["dedupe"] is True
    # 250 ham texts + the 3 odd ones + 25 spam texts.
    assert report["collection"] == {
        "rows": 360,
        "classes": {"ham": 300, "spam": 60},
        "distinct_texts": 278,
    }
    assert report["id2label"] == {"0": "ham", "1": "spam"}
    assert report["balanced"]["rows"] == 50
    splits = report["splits"]
    assert [splits[name]["rows"] for name in ("train", "validation", "test")] == [35, 5, 10]
    assert all(splits[name]["seen_in_training"] == 0 for name in ("validation", "test"))


def test_missing_split_says_which_step_to_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run `gpt-spam split`"):
        read_split(tmp_path / "train.csv")
