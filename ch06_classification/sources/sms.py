"""Fetch the SMS Spam Collection, check that it is the real thing, and read it.

(:func:`fetch` streams any dataset's download under a cap of its own: the IMDB reviews of
the book's bonus, ``imdb.py``, come through it too.)

The collection comes as a zip archive from the UCI Machine Learning Repository (or the
book's mirror), or from a file the user already has: the zip itself or the plain
``SMSSpamCollection`` file inside it. Whatever the source, only a file that passes
:func:`validate_sms_spam` ever lands in the data folder, as ``SMSSpamCollection.tsv``.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import requests
from tqdm import tqdm

from ch06_classification.storage.datafiles import SMS_SPAM_TSV, SOURCE_ENV_VAR, DataError, option
from ch06_classification.storage.printable import listed
from ch06_classification.storage.safe_files import (
    atomic_output,
    ensure_writable_folder,
    folder_lock,
    scratch_folder,
    settle,
)

UCI_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
# Tried in order when the UCI site is down: the copy the book's own code falls back to.
MIRROR_URLS = ("https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",)
DEFAULT_URLS = (UCI_URL, *MIRROR_URLS)

# The one archive member we use; the UCI zip also holds a readme, which we ignore.
ARCHIVE_MEMBER = "SMSSpamCollection"

# Version 1 of the collection (Almeida & Gómez Hidalgo, 2011).
EXPECTED_ROWS = 5574
EXPECTED_CLASS_COUNTS = {"ham": 4827, "spam": 747}

# The collection is 477,906 bytes (its zip 207,704). Anything far larger is not it, and is
# refused while it streams in, so that a zip bomb (a small archive whose member unpacks to
# gigabytes) or an endless download costs no more than this much disk and no more memory
# than one chunk.
MAX_COLLECTION_BYTES = 8 * 1024**2
MAX_DOWNLOAD_BYTES = 8 * 1024**2

# (connect, read) seconds: fail fast on a dead host, but let a slow one finish.
HTTP_TIMEOUT = (10, 60)
_CHUNK_BYTES = 64 * 1024
_ZIP_MAGIC = b"PK\x03\x04"


def read_sms_spam(path: str | Path) -> pd.DataFrame:
    """Read the collection's ``label<TAB>text`` lines into columns ``Label`` and ``Text``.

    Both columns are strings, exactly as in the file: no quote handling, and no
    conversion of texts such as "NA" or "null" into missing values.
    """
    with _blame(path):
        return _parse_tsv(path)


def validate_sms_spam(df: pd.DataFrame) -> None:
    """Raise :class:`DataError` unless ``df`` is the SMS Spam Collection v.1."""
    problem = _find_problem(df)
    if problem:
        raise DataError(f"not the SMS Spam Collection v.1: {problem}")


def load_sms_spam(data_dir: Path) -> pd.DataFrame:
    """The validated collection that :func:`download_sms_spam` left in ``data_dir``."""
    path = Path(data_dir) / SMS_SPAM_TSV
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: run `gpt-spam download` (or scripts/01_download.py) first"
        )
    settle(path.parent)
    return _read_valid(path)


def download_sms_spam(
    data_dir: Path,
    source: str | Path | None = None,
    urls: Sequence[str] = DEFAULT_URLS,
) -> Path:
    """Put a validated copy of the collection in ``data_dir`` and return its path.

    Where it comes from, first match wins: a valid copy already in ``data_dir`` (reused);
    ``source``, a local zip or TSV; the file named by ``$SMS_SPAM_SOURCE``; each of
    ``urls`` in turn. A copy in ``data_dir`` that fails validation is deleted and
    fetched again.
    """
    data_dir = ensure_writable_folder(data_dir, needed_bytes=2 * MAX_COLLECTION_BYTES)
    target = data_dir / SMS_SPAM_TSV
    with folder_lock(data_dir):
        if _reuse_existing(target):
            return target
        source = source or os.environ.get(SOURCE_ENV_VAR) or None
        if source is None:
            _install_from_urls(urls, target)
        else:
            _install_from_local_file(Path(source).expanduser(), target)
    print(f"Saved the validated SMS Spam Collection to {target}")
    return target


def _parse_tsv(path: str | Path) -> pd.DataFrame:
    """``read_sms_spam`` without the file name in its error messages."""
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            header=None,
            names=["Label", "Text"],
            # The book's code reads this file with pandas' default quoting, where a text
            # that starts with `"` runs on to the next `"`, even across lines: two ham
            # rows silently become one and the collection has 5,572 rows, not 5,574.
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            dtype=str,
            encoding="utf-8",
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        reason = str(error).strip().splitlines()[-1]
        raise DataError(f"not a tab-separated 'label<TAB>text' UTF-8 file ({reason})") from error
    # With a third field on its first line, pandas silently turns the labels into the index.
    if not isinstance(df.index, pd.RangeIndex):
        raise DataError("not a tab-separated 'label<TAB>text' file (line 1 has more than one tab)")
    return df


def _read_valid(path: Path) -> pd.DataFrame:
    """Read and validate ``path``; any error names the file."""
    with _blame(path):
        _check_size(path.stat().st_size)
        df = _parse_tsv(path)
        validate_sms_spam(df)
    return df


def _find_problem(df: pd.DataFrame) -> str | None:
    """The first way ``df`` differs from the expected collection, or None."""
    if len(df) != EXPECTED_ROWS:
        return f"expected {EXPECTED_ROWS:,} rows, found {len(df):,}"
    unknown = sorted(set(df["Label"]) - set(EXPECTED_CLASS_COUNTS))
    if unknown:
        return f"labels must be 'ham' or 'spam', found {listed(unknown, quote=True, shown=3)}"
    counts = df["Label"].value_counts()
    for label, expected in EXPECTED_CLASS_COUNTS.items():
        if counts.get(label, 0) != expected:
            return f"expected {expected:,} {label} rows, found {counts.get(label, 0):,}"
    empty = df["Text"] == ""
    if empty.any():
        return f"line {int(empty.argmax()) + 1} has no text after its label"
    return None


@contextmanager
def _blame(origin: str | Path) -> Iterator[None]:
    """Prefix any :class:`DataError` raised in the block with where the data came from."""
    try:
        yield
    except DataError as error:
        raise DataError(f"{origin}: {error}") from error


def _reuse_existing(target: Path) -> bool:
    """True if ``target`` already holds the valid collection; an invalid one is deleted."""
    if not target.is_file():
        return False
    try:
        _read_valid(target)
    except DataError as error:
        print(f"Replacing an invalid copy: {error}")
        target.unlink()
        return False
    print(f"Reusing the validated SMS Spam Collection in {target}")
    return True


def _install_from_local_file(source: Path, target: Path) -> None:
    """Install the collection from a zip or TSV the user already has."""
    try:
        if not source.is_file():
            raise DataError(f"{source}: no such file")
        _install(source, target, origin=source)
    except DataError as error:
        raise DataError(
            f"{error}; give the path of sms_spam_collection.zip from {UCI_URL}, "
            f"or of the '{ARCHIVE_MEMBER}' file inside it"
        ) from error


def _install_from_urls(urls: Sequence[str], target: Path, keep_archive: Path | None = None) -> None:
    """Download from the first URL that yields a valid collection, else raise one error.

    ``keep_archive``: where to keep the downloaded file once it has proved valid.
    """
    failures = []
    # A scratch folder beside the target, removed with everything in it whatever happens.
    with scratch_folder(target.parent) as scratch:
        archive = Path(scratch) / "download"
        for url in urls:
            try:
                fetch(url, archive)
                _install(archive, target, origin=url)
                if keep_archive is not None:
                    shutil.move(archive, keep_archive)
                return
            except requests.RequestException as error:
                failures.append(f"{url}: {describe_request_error(error)}")
            except DataError as error:
                failures.append(str(error))
    tried = "; ".join(failures) if failures else "no URLs to try"
    raise DataError(
        f"could not get the SMS Spam Collection ({tried}). To work offline, download "
        f"sms_spam_collection.zip yourself from {UCI_URL} and pass it with "
        f"{option('--sms-source PATH')} or {SOURCE_ENV_VAR}=PATH"
    )


def fetch(url: str, destination: Path, max_bytes: int = MAX_DOWNLOAD_BYTES) -> None:
    """Stream ``url`` into ``destination``, with a progress bar on stderr; refuse (with a
    :class:`DataError`) more than ``max_bytes``, the cap of the dataset it should be."""
    print(f"Downloading {url}")
    with requests.get(url, stream=True, timeout=HTTP_TIMEOUT) as response:
        response.raise_for_status()
        expected = int(response.headers.get("Content-Length", 0)) or None
        compressed = "Content-Encoding" in response.headers
        if expected and expected > max_bytes:
            raise DataError(f"{url}: {expected:,} bytes, far larger than the dataset")
        received = 0
        with (
            destination.open("wb") as file,
            tqdm(total=expected, unit="B", unit_scale=True, file=sys.stderr, leave=False) as bar,
        ):
            for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                received += len(chunk)
                if received > max_bytes:
                    raise DataError(f"{url}: over {max_bytes:,} bytes, not the dataset")
                file.write(chunk)
                bar.update(len(chunk))
    # requests counts decompressed bytes, so only an uncompressed size can be checked.
    if expected and not compressed and received != expected:
        raise DataError(f"{url}: the download stopped after {received:,} of {expected:,} bytes")


def _install(raw: Path, target: Path, origin: str | Path) -> None:
    """Validate the collection in ``raw`` (a zip or TSV) and move it onto ``target``."""
    with _blame(origin), atomic_output(target) as candidate:
        _copy_collection(raw, candidate)
        validate_sms_spam(_parse_tsv(candidate))


def _copy_collection(raw: Path, destination: Path) -> None:
    """Write the collection in ``raw`` (a zip archive or the TSV itself) to ``destination``."""
    with raw.open("rb") as file:
        is_zip = file.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    if not is_zip:
        _check_size(raw.stat().st_size)
        shutil.copyfile(raw, destination)
        return
    try:
        with zipfile.ZipFile(raw) as archive:
            if ARCHIVE_MEMBER not in archive.namelist():
                raise DataError(f"a zip archive without a '{ARCHIVE_MEMBER}' file at its root")
            # The size the archive declares is checked first, and the bytes that actually
            # come out are counted too, since a crafted archive can declare anything.
            _check_size(archive.getinfo(ARCHIVE_MEMBER).file_size)
            # Copy the member's bytes to a path we chose: a name inside the archive
            # (say "../../x") never decides where anything is written.
            with archive.open(ARCHIVE_MEMBER) as member, destination.open("wb") as out:
                written = 0
                while chunk := member.read(_CHUNK_BYTES):
                    written += len(chunk)
                    _check_size(written)
                    out.write(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise DataError(
            f"a damaged zip archive ({error}): an interrupted download? try again"
        ) from error


def _check_size(size: int) -> None:
    if size > MAX_COLLECTION_BYTES:
        raise DataError(
            f"{size:,} bytes or more of text, where the collection has 477,906: not the "
            "SMS Spam Collection (a zip bomb?)"
        )


def describe_request_error(error: requests.RequestException) -> str:
    """A few words on why a request failed, for a one-line message."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code}"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "the connection broke off mid-download"
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return "could not connect"
    return "the request failed"
