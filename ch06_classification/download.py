"""Download the SMS Spam Collection (section 6.2), as the book does.

The collection comes as a zip archive from the UCI Machine Learning Repository; the book
downloads it, unzips it and gives the file inside a ``.tsv`` name. The pipeline's download
(``gpt-spam download``: a mirror when UCI is down, a cap on the size, a check that the file
is the collection, atomic writes) is ``ch06_classification/sources/sms.py``.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SOURCE_ENV_VAR = "SMS_SPAM_SOURCE"  # a copy of the zip, for a machine without internet


def download_and_unzip_spam_data(
    url: str,
    zip_path: str | Path,
    extracted_path: str | Path,
    data_file_path: str | Path,
    source: str | Path | None = None,
) -> None:
    """The book's download step: the collection as a TSV file at ``data_file_path``.

    As in the book, a file already at ``data_file_path`` is kept, and the archive stays at
    ``zip_path``. An archive already at ``zip_path`` is not downloaded again, and
    ``source`` (or ``$SMS_SPAM_SOURCE``), a copy of the zip you have, replaces the network.
    """
    data_file_path, zip_path = Path(data_file_path), Path(zip_path)
    if data_file_path.exists():
        print(f"{data_file_path} already exists. Skipping download and extraction.")
        return

    if not zip_path.exists():
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        source = source or os.environ.get(SOURCE_ENV_VAR)
        if source:
            shutil.copyfile(source, zip_path)
        else:
            # Downloading the file
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    zip_path.write_bytes(response.read())
            except (urllib.error.URLError, TimeoutError) as error:
                zip_path.unlink(missing_ok=True)
                raise ConnectionError(
                    f"could not download {url} ({error}); without internet, pass "
                    f"source='path/to/sms_spam_collection.zip' or set {SOURCE_ENV_VAR}"
                ) from None

    # Unzipping the file
    with zipfile.ZipFile(zip_path, "r") as zip_ref:
        zip_ref.extract("SMSSpamCollection", extracted_path)

    # Add .tsv file extension
    original_file_path = Path(extracted_path) / "SMSSpamCollection"
    os.replace(original_file_path, data_file_path)
    print(f"File downloaded and saved as {data_file_path}")
