"""Fetching, validating and reading the collection, against a local HTTP server."""

from __future__ import annotations

import csv
import re
import socket
from pathlib import Path

import pandas as pd
import pytest

from ch06_classification.sources import sms as download
from ch06_classification.sources.sms import download_sms_spam, read_sms_spam, validate_sms_spam
from ch06_classification.storage.datafiles import SMS_SPAM_TSV, DataError, atomic_output
from tests.local_server import LocalServer
from tests.sms_data import VALID_TSV, VALID_ZIP, synthetic_collection, zip_archive


@pytest.fixture(autouse=True)
def no_source_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own SMS_SPAM_SOURCE must not decide which path these tests take."""
    monkeypatch.delenv(download.SOURCE_ENV_VAR, raising=False)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting fails at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/sms.zip"


def write_file(path: Path, content: bytes) -> Path:
    """Write ``content`` to ``path`` and return the path."""
    path.write_bytes(content)
    return path


def files_in(folder: Path) -> list[str]:
    """Everything in ``folder``, hidden temporary files included."""
    return sorted(path.name for path in folder.iterdir())


# --- reading and validating ------------------------------------------------------------


def test_read_sms_spam_treats_quotes_as_text(tmp_path: Path) -> None:
    path = tmp_path / "sms.tsv"
    path.write_bytes(b'ham\t"Hi there\nham\tsee you" soon, NA\nspam\tNA')

    df = read_sms_spam(path)

    assert df.to_dict("records") == [
        {"Label": "ham", "Text": '"Hi there'},
        {"Label": "ham", "Text": 'see you" soon, NA'},
        {"Label": "spam", "Text": "NA"},  # a text, not a missing value
    ]
    # Why quoting=csv.QUOTE_NONE matters: by default the quote that opens row 1 runs on
    # into row 2, and the two rows become one (the book's 5,572 instead of 5,574).
    assert len(pd.read_csv(path, sep="\t", header=None)) == 2
    assert len(pd.read_csv(path, sep="\t", header=None, quoting=csv.QUOTE_NONE)) == 3


def test_synthetic_collection_is_valid_and_would_be_misread_with_default_quoting(
    tmp_path: Path,
) -> None:
    path = write_file(tmp_path / "sms.tsv", VALID_TSV)
    validate_sms_spam(read_sms_spam(path))  # does not raise
    assert len(pd.read_csv(path, sep="\t", header=None)) == 5573


@pytest.mark.parametrize(
    ("tsv", "message"),
    [
        (synthetic_collection(ham=4825), "expected 5,574 rows, found 5,572"),
        (synthetic_collection().replace(b"ham\tSee you at 7\n", b"Ham\tSee\n"), "'Ham'"),
        (synthetic_collection(ham=4828, spam=746), "expected 4,827 ham rows, found 4,828"),
        (synthetic_collection().replace(b"ham\tSee you at 7\n", b"ham\t\n"), "line 8 has no text"),
    ],
    ids=["row count", "unknown label", "class counts", "empty text"],
)
def test_validate_names_what_is_wrong(tmp_path: Path, tsv: bytes, message: str) -> None:
    df = read_sms_spam(write_file(tmp_path / "sms.tsv", tsv))
    with pytest.raises(DataError, match=r"not the SMS Spam Collection v\.1") as raised:
        validate_sms_spam(df)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "content",
    [b"ham\thi\nspam\tan\textra tab\n", b"ham\tan\textra tab\nspam\thi\n", b"\xff\xfe\x00\x01"],
    ids=["extra tab", "extra tab on line 1", "not utf-8"],
)
def test_read_rejects_files_that_are_not_label_tab_text(tmp_path: Path, content: bytes) -> None:
    path = write_file(tmp_path / "odd.tsv", content)
    with pytest.raises(DataError, match=r"odd\.tsv: not a tab-separated"):
        read_sms_spam(path)


# --- downloading -----------------------------------------------------------------------


def test_download_writes_the_validated_collection_and_nothing_else(
    tmp_path: Path, http_server: LocalServer
) -> None:
    url = http_server.serve("/sms.zip", VALID_ZIP)

    path = download_sms_spam(tmp_path / "data", urls=[url])

    assert path == tmp_path / "data" / SMS_SPAM_TSV
    assert path.read_bytes() == VALID_TSV
    assert files_in(tmp_path / "data") == [SMS_SPAM_TSV]  # no readme, no temporary files


def test_download_falls_back_to_the_next_url(tmp_path: Path, http_server: LocalServer) -> None:
    mirror = http_server.serve("/mirror.zip", VALID_ZIP)
    urls = [closed_port_url(), http_server.url("/gone.zip"), mirror]

    path = download_sms_spam(tmp_path, urls=urls)

    assert path.read_bytes() == VALID_TSV


BAD_DOWNLOADS = {
    "truncated zip": (VALID_ZIP[: len(VALID_ZIP) // 2], None, "damaged zip archive"),
    "zip without the member": (
        zip_archive({"readme": b"x", "data/SMSSpamCollection": VALID_TSV}),
        None,
        "without a 'SMSSpamCollection' file at its root",
    ),
    "wrong content": (
        zip_archive({"SMSSpamCollection": synthetic_collection(ham=10, spam=2)}),
        None,
        "expected 5,574 rows, found 12",
    ),
    "html page": (b"<html>\n<body>Not here</body>\n</html>", None, "expected 5,574 rows, found 3"),
    "connection cut short": (VALID_ZIP[:1000], len(VALID_ZIP), "broke off mid-download"),
}


@pytest.mark.parametrize("case", BAD_DOWNLOADS.values(), ids=BAD_DOWNLOADS.keys())
def test_bad_download_is_refused_and_leaves_no_file(
    tmp_path: Path, http_server: LocalServer, case: tuple[bytes, int | None, str]
) -> None:
    body, declared_length, reason = case
    url = http_server.serve("/sms.zip", body, declared_length)

    with pytest.raises(DataError) as raised:
        download_sms_spam(tmp_path, urls=[url])

    assert f"{url}: " in str(raised.value)
    assert reason in str(raised.value)
    assert files_in(tmp_path) == []


def test_every_source_failing_is_one_error_naming_each_url_and_the_way_out(
    tmp_path: Path, http_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAKELEVEL", raising=False)  # `make test` sets it
    urls = [closed_port_url(), http_server.url("/gone.zip")]

    with pytest.raises(DataError) as raised:
        download_sms_spam(tmp_path, urls=urls)

    message = str(raised.value)
    assert "\n" not in message
    assert f"{urls[0]}: could not connect" in message
    assert f"{urls[1]}: HTTP 404" in message
    assert "--sms-source PATH" in message and "SMS_SPAM_SOURCE" in message
    assert 'ARGS="' not in message
    assert files_in(tmp_path) == []


def test_under_make_the_way_out_is_written_as_make_args(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAKELEVEL", "1")  # run by `make pipeline`: options go in ARGS="..."
    with pytest.raises(DataError, match='ARGS="--sms-source PATH"'):
        download_sms_spam(tmp_path, urls=[closed_port_url()])


def test_member_names_never_choose_where_files_go(tmp_path: Path) -> None:
    archive = tmp_path / "sms.zip"
    archive.write_bytes(
        zip_archive({"../escaped.txt": b"x", "/abs.txt": b"y", "SMSSpamCollection": VALID_TSV})
    )

    download_sms_spam(tmp_path / "data", source=archive)

    assert files_in(tmp_path) == ["data", "sms.zip"]
    assert files_in(tmp_path / "data") == [SMS_SPAM_TSV]


# --- local sources and reuse -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [("sms.zip", VALID_ZIP), ("SMSSpamCollection", VALID_TSV)],
    ids=["zip", "tsv"],
)
def test_local_zip_or_tsv_is_used_instead_of_the_network(
    tmp_path: Path, name: str, content: bytes
) -> None:
    source = tmp_path / name
    source.write_bytes(content)

    path = download_sms_spam(tmp_path / "data", source=str(source), urls=[])

    assert path.read_bytes() == VALID_TSV


def test_source_comes_from_the_environment_when_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "sms.zip"
    source.write_bytes(VALID_ZIP)
    monkeypatch.setenv(download.SOURCE_ENV_VAR, str(source))

    assert download_sms_spam(tmp_path / "data", urls=[]).read_bytes() == VALID_TSV


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "no such file"), (synthetic_collection(ham=3, spam=1), "expected 5,574 rows, found 4")],
    ids=["missing", "wrong content"],
)
def test_bad_local_source_is_a_clear_error_and_leaves_no_file(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    source = tmp_path / "mine.tsv"
    if content is not None:
        source.write_bytes(content)

    pattern = f"^{re.escape(str(source))}: .*{reason}.*sms_spam_collection\\.zip"
    with pytest.raises(DataError, match=pattern):
        download_sms_spam(tmp_path / "data", source=source, urls=[])

    assert files_in(tmp_path / "data") == []


def test_valid_existing_file_is_reused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    download_sms_spam(tmp_path, source=write_file(tmp_path / "sms.zip", VALID_ZIP))

    # No source and no URLs: only reuse can succeed.
    assert download_sms_spam(tmp_path, urls=[]).read_bytes() == VALID_TSV
    assert "Reusing the validated SMS Spam Collection" in capsys.readouterr().out


def test_invalid_existing_file_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / SMS_SPAM_TSV).write_bytes(synthetic_collection(ham=5, spam=5))

    path = download_sms_spam(tmp_path, source=write_file(tmp_path / "sms.zip", VALID_ZIP))

    assert path.read_bytes() == VALID_TSV
    assert "Replacing an invalid copy" in capsys.readouterr().out


def test_invalid_existing_file_is_gone_even_when_no_source_works(tmp_path: Path) -> None:
    (tmp_path / SMS_SPAM_TSV).write_bytes(synthetic_collection(ham=5, spam=5))

    with pytest.raises(DataError):
        download_sms_spam(tmp_path, urls=[])

    assert files_in(tmp_path) == []


def test_interrupted_download_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fetch_half_then_interrupt(url: str, destination: Path, max_bytes: int = 0) -> None:
        destination.write_bytes(VALID_ZIP[:1000])
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "fetch", fetch_half_then_interrupt)

    with pytest.raises(KeyboardInterrupt):
        download_sms_spam(tmp_path, urls=["http://127.0.0.1:9/never-reached.zip"])

    assert files_in(tmp_path) == []


def test_atomic_output_replaces_only_on_success(tmp_path: Path) -> None:
    target = write_file(tmp_path / "file.txt", b"old")

    with pytest.raises(RuntimeError), atomic_output(target) as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert files_in(tmp_path) == ["file.txt"] and target.read_bytes() == b"old"

    with atomic_output(target) as complete:
        complete.write_bytes(b"new")
    assert files_in(tmp_path) == ["file.txt"] and target.read_bytes() == b"new"
