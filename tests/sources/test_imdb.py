"""`--dataset imdb`: the book's bonus data, read from IMDB-shaped archives built here, offline."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from ch06_classification.cli.main import main
from ch06_classification.sources import imdb
from ch06_classification.sources.imdb import read_imdb_archive
from ch06_classification.storage.datafiles import IMDB_REVIEWS_CSV, SPLIT_REPORT, DataError

WORDS = {
    "pos": ["great", "wonderful", "loved", "brilliant", "superb", "moving"],
    "neg": ["awful", "boring", "terrible", "waste", "dull", "worst"],
}


def build_archive(
    path: Path,
    per_folder: int,
    seed: int = 0,
    extra: dict[str, bytes] | None = None,
    first_text: bytes | None = None,
) -> Path:
    """aclImdb_v1.tar.gz's layout: train/ and test/, pos/ and neg/, <id>_<rating>.txt, with
    the files the bonus does not read (unsup/, urls, README) beside them. ``first_text``:
    the bytes of review 0 of test/pos/, the first one the bonus reads."""
    rng = random.Random(seed)
    with tarfile.open(path, "w:gz") as archive:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        add("aclImdb/README", b"Large Movie Review Dataset v1.0")
        for subset in ("train", "test"):
            for folder in ("neg", "pos"):
                # Written in an order other than the names' (the real archive's is its own).
                for i in rng.sample(range(per_folder), per_folder):
                    rating = rng.choice([7, 8, 9, 10] if folder == "pos" else [1, 2, 3, 4])
                    text = " ".join(rng.choice(WORDS[folder]) for _ in range(rng.randint(3, 30)))
                    data = text.encode()
                    if first_text is not None and (subset, folder, i) == ("test", "pos", 0):
                        data = first_text
                    add(f"aclImdb/{subset}/{folder}/{i}_{rating}.txt", data)
            add(f"aclImdb/{subset}/urls_pos.txt", b"http://www.imdb.com/title/tt0453418/\n")
        for i in range(3):
            add(f"aclImdb/train/unsup/{i}_0.txt", b"an unlabelled review")
        for name, data in (extra or {}).items():
            add(name, data)
    return path


def bonus_rows(path: Path) -> list[tuple[str, int]]:
    """The bonus's load_dataset_to_dataframe, restated on the archive: test then train, pos
    then neg, the files of each folder in name order; labels pos 1, neg 0."""
    with tarfile.open(path) as archive:  # read in one pass: a gzip stream cannot seek back
        files = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}
    rows = []
    for subset in ("test", "train"):
        for label in ("pos", "neg"):
            folder = f"aclImdb/{subset}/{label}/"
            for name in sorted(n[len(folder) :] for n in files if n.startswith(folder)):
                rows.append((files[folder + name].decode(), {"pos": 1, "neg": 0}[label]))
    return rows


def bonus_partition(path: Path) -> list[pd.DataFrame]:
    """The bonus's shuffle with 123, its second shuffle, its cut at 35,000 and 40,000."""
    df = pd.DataFrame(bonus_rows(path), columns=["text", "label"])
    df = df.sample(frac=1, random_state=123).reset_index(drop=True)
    df = df.sample(frac=1, random_state=123).reset_index(drop=True)
    return [df.iloc[:35000], df.iloc[35000:40000], df.iloc[40000:]]


@pytest.fixture(scope="module")
def full_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50,000 short reviews: the real archive's counts, in seconds."""
    return build_archive(tmp_path_factory.mktemp("imdb") / "aclImdb_v1.tar.gz", 12_500)


def test_reviews_come_in_the_bonus_reading_order(tmp_path: Path) -> None:
    path = build_archive(tmp_path / "a.tar.gz", 4)

    df = read_imdb_archive(path, per_folder=4)

    rows = bonus_rows(path)
    assert df["Text"].tolist() == [text for text, _ in rows]
    assert df["Label"].tolist() == ["pos"] * 4 + ["neg"] * 4 + ["pos"] * 4 + ["neg"] * 4


def test_line_breaks_are_read_as_the_bonus_reads_them(tmp_path: Path) -> None:
    # Text mode, as the bonus opens the files: "\r\n" and "\r" become "\n".
    path = build_archive(tmp_path / "a.tar.gz", 2, first_text=b"One.\r\nTwo.\rThree\n")
    assert read_imdb_archive(path, per_folder=2)["Text"].iloc[0] == "One.\nTwo.\nThree\n"


def test_a_count_that_is_not_the_datasets_is_refused(tmp_path: Path) -> None:
    path = build_archive(tmp_path / "a.tar.gz", 3, extra={"aclImdb/test/pos/99_9.txt": b"more"})
    with pytest.raises(DataError, match=r"expected 3 reviews in aclImdb/test/pos/, found 4"):
        read_imdb_archive(path, per_folder=3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"aclImdb/train/pos/99_2.txt": b"rated 2"}, "a pos review rated 2"),
        ({"aclImdb/test/neg/99_3.txt": b"\xff\xfe"}, "not UTF-8"),
        ({"aclImdb/test/neg/99_3.txt": b"  "}, "found 3"),
    ],
)
def test_an_archive_that_is_not_the_dataset_is_refused(
    tmp_path: Path, extra: dict[str, bytes], message: str
) -> None:
    path = build_archive(tmp_path / "a.tar.gz", 2, extra=extra)
    with pytest.raises(DataError, match=message):
        read_imdb_archive(path, per_folder=2)


def test_a_damaged_archive_says_so(tmp_path: Path) -> None:
    path = build_archive(tmp_path / "a.tar.gz", 2)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"not a readable tar\.gz archive"):
        read_imdb_archive(path, per_folder=2)


def test_what_an_archive_declares_is_capped_before_it_is_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = build_archive(tmp_path / "a.tar.gz", 2)
    monkeypatch.setattr(imdb, "MAX_ARCHIVE_BYTES", 500)
    with pytest.raises(DataError, match=r"over 500 bytes unpacked.*a tar bomb"):
        read_imdb_archive(path, per_folder=2)
    monkeypatch.setattr(imdb, "MAX_ARCHIVE_BYTES", 10**9)
    monkeypatch.setattr(imdb, "MAX_REVIEW_BYTES", 5)
    with pytest.raises(DataError, match="bytes, not a review"):
        read_imdb_archive(path, per_folder=2)


def test_download_and_split_as_the_bonus(
    full_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMDB_SOURCE", raising=False)
    assert main(["split", "--dataset", "imdb", "--data-dir", "imdb"]) == 1
    assert "run `gpt-spam download --dataset imdb --data-dir imdb` first" in capsys.readouterr().err

    download = ["download", "--dataset", "imdb", "--data-dir", "imdb", "--weights", "random"]
    assert main([*download, "--imdb-source", str(full_archive)]) == 0
    assert "50,000 reviews (25,000 neg, 25,000 pos)" in capsys.readouterr().out
    assert main(download) == 0  # the validated copy is reused: no source needed
    assert "Reusing the validated IMDB reviews" in capsys.readouterr().out

    assert main(["split", "--dataset", "imdb", "--data-dir", "imdb"]) == 0
    assert "validation      5,000 rows" in capsys.readouterr().out
    report = json.loads((tmp_path / "imdb" / SPLIT_REPORT).read_text())
    assert report["id2label"] == {"0": "neg", "1": "pos"}
    assert not (tmp_path / "imdb" / "test_realistic.csv").exists()
    # Row for row the bonus's train.csv, validation.csv and test.csv (labels 0 neg, 1 pos).
    for name, expected in zip(
        ("train", "validation", "test"), bonus_partition(full_archive), strict=True
    ):
        ours = pd.read_csv(tmp_path / "imdb" / f"{name}.csv", keep_default_na=False)
        assert ours["Text"].tolist() == expected["text"].tolist()
        assert ours["Label"].tolist() == expected["label"].tolist()


def test_a_missing_local_archive_is_one_line(tmp_path: Path, capsys) -> None:
    args = ["download", "--dataset", "imdb", "--data-dir", str(tmp_path), "--weights", "random"]
    assert main([*args, "--imdb-source", str(tmp_path / "nowhere.tar.gz")]) == 1
    error = capsys.readouterr().err
    assert "--imdb-source" in error and "nowhere.tar.gz does not exist" in error
    assert error.count("\n") == 1
    assert not (tmp_path / IMDB_REVIEWS_CSV).exists()
