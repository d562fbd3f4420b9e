"""The IMDB movie reviews of the book's bonus: 50,000 labelled reviews, positive or negative.

The book's bonus (``ch06/03_bonus_imdb-classification``) runs the chapter's recipe on the
Large Movie Review Dataset (Maas et al., 2011): ``aclImdb_v1.tar.gz`` from Stanford, whose
``train/`` and ``test/`` folders each hold 12,500 positive (``pos/``, rated 7 to 10) and
12,500 negative (``neg/``, rated 1 to 4) reviews, one ``<id>_<rating>.txt`` file each
(the 50,000 unlabelled reviews of ``train/unsup/`` are not used). It reads them into one
table (test before train, pos before neg, files in name order), shuffles it with seed 123,
shuffles again and cuts 35,000 / 5,000 / 10,000. Here the archive is read without
unpacking it, validated, and kept as ``imdb_reviews.csv`` (labels "neg" = class 0 and
"pos" = class 1, as the bonus numbers them); :func:`load_imdb` gives the first shuffle, and
``gpt-spam split --dataset imdb`` the cut (``random_split`` at 70/10/20 of 50,000 rows is
the bonus's cut, row for row).

A tar.gz is a stream: reading a member means decompressing everything before it. The
archive's caps are checked on what it declares before anything is decompressed: the
download, each review, and all members together (the real archive unpacks to 0.2 GB).
"""

from __future__ import annotations

import gzip
import os
import re
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import requests

from ch06_classification.sources.sms import describe_request_error, fetch
from ch06_classification.storage.datafiles import (
    IMDB_REVIEWS_CSV,
    IMDB_SOURCE_ENV_VAR,
    DataError,
    option,
)
from ch06_classification.storage.safe_files import (
    atomic_output,
    ensure_writable_folder,
    folder_lock,
    scratch_folder,
    settle,
)

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"

IMDB_CLASS_NAMES = ("neg", "pos")  # the bonus's {"pos": 1, "neg": 0}
# The bonus's reading order: each subset, each label, the files in name order.
SUBSETS = ("test", "train")
FOLDERS = ("pos", "neg")
EXPECTED_PER_FOLDER = 12_500
# pos reviews are rated 7 to 10 stars, neg ones 1 to 4 (the dataset's README).
RATINGS = {"pos": range(7, 11), "neg": range(1, 5)}

# The archive is 84,125,825 bytes and unpacks to about 0.2 GB; its longest review has
# 13,704 bytes. Anything far larger is refused before it is downloaded or decompressed.
MAX_DOWNLOAD_BYTES = 128 * 1024**2
MAX_ARCHIVE_BYTES = 1024**3
MAX_REVIEW_BYTES = 1024**2

_REVIEW = re.compile(r"(?:\./)?aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt")


def read_imdb_archive(path: str | Path, per_folder: int = EXPECTED_PER_FOLDER) -> pd.DataFrame:
    """The labelled reviews of ``aclImdb_v1.tar.gz`` as ``Label`` ("neg"/"pos") and
    ``Text``, in the bonus's reading order, validated (:class:`DataError` otherwise).

    ``per_folder``: the reviews each of the four folders must hold (the real 12,500; tests
    read tiny archives of the same layout)."""
    reviews: dict[tuple[str, str], list[tuple[str, str]]] = {
        (subset, folder): [] for subset in SUBSETS for folder in FOLDERS
    }
    declared = 0
    try:
        # "r|gz": one pass over the stream, never seeking back.
        with tarfile.open(path, mode="r|gz") as archive:
            for member in archive:
                declared += member.size
                if declared > MAX_ARCHIVE_BYTES:
                    raise DataError(
                        f"over {MAX_ARCHIVE_BYTES:,} bytes unpacked, where the IMDB archive "
                        "has about 0.2 GB: not aclImdb_v1.tar.gz (a tar bomb?)"
                    )
                match = _REVIEW.fullmatch(member.name)
                if match is None or not member.isfile():
                    continue
                subset, folder, _, rating = match.groups()
                if int(rating) not in RATINGS[folder]:
                    raise DataError(f"{member.name}: a {folder} review rated {rating}")
                if member.size > MAX_REVIEW_BYTES:
                    raise DataError(f"{member.name}: {member.size:,} bytes, not a review")
                raw = archive.extractfile(member).read()  # type: ignore[union-attr]
                reviews[subset, folder].append((os.path.basename(member.name), _text(raw)))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(
            f"not a readable tar.gz archive ({error}): an interrupted download? try again"
        ) from error
    except UnicodeDecodeError as error:
        raise DataError(f"a review that is not UTF-8 text ({error.reason})") from None
    return _table(reviews, per_folder)


def validate_imdb(df: pd.DataFrame, per_folder: int = EXPECTED_PER_FOLDER) -> None:
    """Raise :class:`DataError` unless ``df`` holds the 50,000 labelled IMDB reviews."""
    expected = len(SUBSETS) * per_folder  # of each class
    counts = df["Label"].value_counts()
    for name in IMDB_CLASS_NAMES:
        if counts.get(name, 0) != expected:
            raise DataError(
                f"not the IMDB reviews: expected {expected:,} {name} reviews, found "
                f"{counts.get(name, 0):,}"
            )
    if len(df) != 2 * expected:
        raise DataError(f"not the IMDB reviews: {len(df):,} rows, expected {2 * expected:,}")
    empty = df["Text"].str.strip() == ""
    if empty.any():
        raise DataError(f"not the IMDB reviews: review {int(empty.argmax()) + 1} is empty")


def download_imdb(
    data_dir: Path, source: str | Path | None = None, urls: Sequence[str] = (IMDB_URL,)
) -> Path:
    """Put the validated reviews in ``data_dir`` as ``imdb_reviews.csv``; return its path.

    First match wins: a valid copy already there (reused); ``source``, a local
    ``aclImdb_v1.tar.gz``; the file named by ``$IMDB_SOURCE``; each of ``urls``.
    """
    data_dir = ensure_writable_folder(data_dir, needed_bytes=MAX_DOWNLOAD_BYTES + 2**28)
    target = data_dir / IMDB_REVIEWS_CSV
    with folder_lock(data_dir):
        if target.is_file():
            try:
                _read_valid(target)
                print(f"Reusing the validated IMDB reviews in {target}")
                return target
            except DataError as error:
                print(f"Replacing an invalid copy: {error}")
                target.unlink()
        source = source or os.environ.get(IMDB_SOURCE_ENV_VAR) or None
        if source is not None:
            source = Path(source).expanduser()
            if not source.is_file():
                raise DataError(f"{source}: no such file; give the path of {_ARCHIVE_HINT}")
            _install(source, target, origin=source)
        else:
            _install_from_urls(urls, target)
    print(f"Saved the validated IMDB reviews to {target}")
    return target


def load_imdb(data_dir: Path, seed: int = 123) -> pd.DataFrame:
    """The validated reviews that :func:`download_imdb` left in ``data_dir``, shuffled
    with ``seed`` as the bonus's ``load_dataset_to_dataframe`` does."""
    path = Path(data_dir) / IMDB_REVIEWS_CSV
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: run `gpt-spam download --dataset imdb` first "
            f"(offline: add {option('--imdb-source PATH')})"
        )
    settle(path.parent)
    return _read_valid(path).sample(frac=1, random_state=seed).reset_index(drop=True)


_ARCHIVE_HINT = f"aclImdb_v1.tar.gz from {IMDB_URL}"


def _text(raw: bytes) -> str:
    # The bonus opens each file in text mode: universal newlines, "\r\n" and "\r" become "\n".
    return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _table(reviews: dict[tuple[str, str], list[tuple[str, str]]], per_folder: int) -> pd.DataFrame:
    for (subset, folder), found in reviews.items():
        if len(found) != per_folder:
            raise DataError(
                f"expected {per_folder:,} reviews in aclImdb/{subset}/{folder}/, found "
                f"{len(found):,}: not aclImdb_v1.tar.gz"
            )
    rows = [
        (folder, text)
        for subset in SUBSETS
        for folder in FOLDERS
        for _, text in sorted(reviews[subset, folder])  # sorted(os.listdir(...)), as the bonus
    ]
    df = pd.DataFrame(rows, columns=["Label", "Text"])
    validate_imdb(df, per_folder)
    return df


def _read_valid(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        if list(df.columns) != ["Label", "Text"]:
            raise DataError("not the columns Label, Text")
        validate_imdb(df)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        if isinstance(error, DataError):
            raise DataError(f"{path}: {error}") from None
        raise DataError(f"{path}: not a CSV file of reviews ({error})") from None
    return df


def _install(archive: Path, target: Path, origin: str | Path) -> None:
    """Read and validate the reviews in ``archive``; write them to ``target`` atomically."""
    try:
        df = read_imdb_archive(archive)
    except DataError as error:
        raise DataError(f"{origin}: {error}") from error
    with atomic_output(target) as candidate:
        df.to_csv(candidate, index=False, lineterminator="\n")


def _install_from_urls(urls: Sequence[str], target: Path) -> None:
    failures = []
    with scratch_folder(target.parent) as scratch:
        archive = Path(scratch) / "aclImdb_v1.tar.gz"
        for url in urls:
            try:
                fetch(url, archive, MAX_DOWNLOAD_BYTES)
                _install(archive, target, origin=url)
                return
            except requests.RequestException as error:
                failures.append(f"{url}: {describe_request_error(error)}")
            except DataError as error:
                failures.append(str(error))
    raise DataError(
        f"could not get the IMDB reviews ({'; '.join(failures) or 'no URLs to try'}). To work "
        f"offline, download {_ARCHIVE_HINT} yourself and pass it with "
        f"{option('--imdb-source PATH')} or {IMDB_SOURCE_ENV_VAR}=PATH"
    )
