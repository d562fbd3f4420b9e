"""The figures the chapter quotes, measured on the real SMS Spam Collection (skipped without it)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from ch06_classification.finetuning.loaders import create_data_loaders
from ch06_classification.sources.sms import download_sms_spam, read_sms_spam, validate_sms_spam
from ch06_classification.sources.split_files import make_splits, read_split, write_splits
from ch06_classification.storage.datafiles import SMS_SPAM_TSV, SPLIT_FILES, SPLIT_REPORT

# The longest training message with the book's seed, in GPT-2 tokens (the book: 120).
LONGEST_TRAINING_MESSAGE = 120


@pytest.fixture(scope="module")
def collection(shared_data: Path) -> pd.DataFrame:
    return read_sms_spam(shared_data / "SMSSpamCollection")


@pytest.fixture(scope="module")
def split_dir(collection: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("data")
    write_splits(collection, data_dir, seed=123)
    return data_dir


def test_collection_counts(collection: pd.DataFrame, shared_data: Path) -> None:
    validate_sms_spam(collection)
    assert len(collection) == 5574
    assert collection["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert collection["Text"].nunique() == 5171
    # What the book's pd.read_csv(..., sep="\t", header=None) gets instead.
    book_way = pd.read_csv(shared_data / "SMSSpamCollection", sep="\t", header=None)
    assert len(book_way) == 5572


def test_the_zip_holds_the_same_collection(shared_data: Path, tmp_path: Path) -> None:
    path = download_sms_spam(tmp_path, source=shared_data / "sms_spam_collection.zip", urls=[])
    assert path == tmp_path / SMS_SPAM_TSV
    assert path.read_bytes() == (shared_data / "SMSSpamCollection").read_bytes()


def test_split_figures_with_the_books_seed(split_dir: Path) -> None:
    figures = json.loads((split_dir / SPLIT_REPORT).read_text())

    assert figures["balanced"]["rows"] == 1494
    assert figures["balanced"]["distinct_texts"] == 1382
    splits = figures["splits"]
    assert [splits[name]["rows"] for name in ("train", "validation", "test")] == [1045, 149, 300]
    # Leakage: rows whose exact text is also in training (33 of the 36 test ones are spam).
    assert splits["validation"]["seen_in_training"] == 13
    test = splits["test"]
    assert (test["seen_in_training"], test["seen_in_training_by_class"]["spam"]) == (36, 33)
    realistic = splits["test_realistic"]
    assert (realistic["rows"], realistic["classes"]) == (880, {"ham": 762, "spam": 118})
    spam_share = realistic["classes"]["spam"] / realistic["rows"]
    assert spam_share == pytest.approx(747 / 5574, abs=5e-4)
    assert realistic["seen_in_training"] == 0


def test_written_csvs_match_the_report(split_dir: Path) -> None:
    train = read_split(split_dir / SPLIT_FILES["train"])
    realistic = read_split(split_dir / SPLIT_FILES["test_realistic"])
    assert len(train) == 1045 and len(realistic) == 880
    assert not realistic["Text"].isin(train["Text"]).any()


def test_dedupe_split_sizes(collection: pd.DataFrame) -> None:
    splits = make_splits(collection, seed=123, dedupe=True)

    assert [len(split) for split in splits] == [914, 130, 262, 888]
    assert not splits.test["Text"].isin(splits.train["Text"]).any()
    assert not splits.validation["Text"].isin(splits.train["Text"]).any()


@pytest.mark.parametrize("padding", ["fixed", "batch"])
def test_loaders_with_the_books_batch_size(split_dir: Path, tokenizer, padding: str) -> None:
    loaders = create_data_loaders(split_dir, tokenizer, batch_size=8, padding=padding)

    assert [len(loader) for loader in loaders] == [130, 19, 38]
    assert loaders.train.dataset.max_length == LONGEST_TRAINING_MESSAGE
    # Checked independently: re-encode the training CSV's texts.
    with (split_dir / SPLIT_FILES["train"]).open(newline="", encoding="utf-8") as file:
        texts = [row["Text"] for row in csv.DictReader(file)]
    assert max(len(tokenizer.encode(text)) for text in texts) == LONGEST_TRAINING_MESSAGE
    input_batch, target_batch, lengths = next(iter(loaders.test))
    assert target_batch.shape == lengths.shape == (8,)
    assert input_batch.shape[1] == (
        LONGEST_TRAINING_MESSAGE if padding == "fixed" else lengths.max()
    )
