"""Bad inputs: malformed split CSVs, zip bombs, messages longer than the model's context,
damaged JSON, and things that are not files where a run's files should be.

Each is refused (one line naming the file and the problem) where it is read, before any
expensive work, or, for long messages, cut to fit with a count in the log.
"""

from __future__ import annotations

import os
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest

from ch06_classification.cli.main import main
from ch06_classification.finetuning import finetune
from ch06_classification.finetuning.finetune import TrainingSettings, fine_tune
from ch06_classification.sources import sms as download
from ch06_classification.sources.sms import download_sms_spam
from ch06_classification.sources.split_files import read_split
from ch06_classification.storage.datafiles import SMS_SPAM_TSV, DataError
from ch06_classification.storage.safe_files import (
    MAX_JSON_DEPTH,
    FileReadError,
    file_exists,
    read_json,
)
from tests.faults import NOT_FILES, contents, never_blocks, put_not_a_file, synthetic_data
from tests.sms_data import synthetic_collection, zip_archive
from tests.tiny_classifier import TINY

# --- Split CSVs -----------------------------------------------------------------------------

BAD_CSVS = {
    "missing column": (b"Label,Message\n0,hi\n", "needs the columns 'Label' and 'Text'"),
    "empty file": (b"", "the file is empty"),
    "header only": (b"Label,Text\n", "holds no messages"),
    "label 2": (b"Label,Text\n0,hi\n2,there\n", "row 2 has the label '2'"),
    "label maybe": (b"Label,Text\nmaybe,hi\n", "row 1 has the label 'maybe'"),
    "not UTF-8": (b"Label,Text\n0,caf\xe9\n", "not UTF-8 text (byte 16 is 0xe9)"),
    "empty text": (b'Label,Text\n0,hi\n1,""\n', "row 2 has no text"),
    "not a CSV": (b'Label,Text\n0,"never closed\n', "not a CSV file"),
}


@pytest.mark.parametrize("case", BAD_CSVS)
def test_bad_split_csv_is_one_error_naming_the_file(tmp_path: Path, case: str) -> None:
    raw, problem = BAD_CSVS[case]
    path = tmp_path / "train.csv"
    path.write_bytes(raw)
    with pytest.raises(DataError) as error:
        read_split(path)
    assert str(error.value).startswith(f"{path}: ")
    assert problem in str(error.value) and "\n" not in str(error.value)


def test_a_folder_instead_of_a_split_csv(tmp_path: Path) -> None:
    (tmp_path / "train.csv").mkdir()
    with pytest.raises(DataError, match=r"train\.csv does not exist"):
        read_split(tmp_path / "train.csv")


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_train_refuses_bad_data_before_building_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, split: str
) -> None:
    data = synthetic_data(tmp_path / "data")
    (data / f"{split}.csv").write_bytes(b"Label,Text\n0,fine\n1,\xff\xfe\n")
    monkeypatch.setattr(finetune, "build_classifier", _must_not_run)

    args = ["--data-dir", str(data), "--run-dir", str(tmp_path / "run"), "--weights", "random"]
    assert main(["train", *args]) == 1

    error = capsys.readouterr().err
    assert (
        error
        == f"gpt-spam train: error: {data / f'{split}.csv'}: not UTF-8 text (byte 20 is 0xff)\n"
    )
    assert not (tmp_path / "run").exists()  # the folder claimed for the run is given back


def test_train_refuses_a_training_split_without_spam(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = synthetic_data(tmp_path / "data")
    (data / "train.csv").write_text("Label,Text\n0,see you\n0,lunch?\n")
    monkeypatch.setattr(finetune, "build_classifier", _must_not_run)
    with pytest.raises(DataError, match=r"train.csv: no spam message \(1\)"):
        fine_tune(TrainingSettings(data_dir=str(data), weights="random"))


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("expensive work started before the data was checked")


# --- The dataset source: zip bombs and oversized files ---------------------------------------


def zip_bomb(path: Path, unpacked_bytes: int) -> Path:
    """A small archive whose SMSSpamCollection member unpacks to ``unpacked_bytes``."""
    chunk = b"ham\t" + b"a" * (1024**2 - 5) + b"\n"  # 1 MiB
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("SMSSpamCollection", "w") as member,
    ):
        for _ in range(unpacked_bytes // len(chunk)):
            member.write(chunk)
    return path


def test_zip_bomb_is_refused_by_its_declared_size_before_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = zip_bomb(tmp_path / "bomb.zip", 64 * 1024**2)
    assert bomb.stat().st_size < 1024**2  # 64 MiB in under 1 MiB
    written = []
    open_file = Path.open

    def watched_open(self: Path, mode: str = "r", *args: object, **kwargs: object):
        if "w" in mode:
            written.append(self)
        return open_file(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", watched_open)
    with pytest.raises(DataError, match=r"67,108,864 bytes or more of text.*zip bomb"):
        download_sms_spam(tmp_path / "data", source=bomb, urls=[])
    assert written == []  # refused before a byte was unpacked
    assert contents(tmp_path / "data") == {}


def test_zip_bomb_that_lies_about_its_size_is_stopped_while_streaming(tmp_path: Path) -> None:
    bomb = zip_bomb(tmp_path / "bomb.zip", 32 * 1024**2)
    # Patch the declared size (local header and central directory) down to 1 kB.
    raw = bytearray(bomb.read_bytes())
    with zipfile.ZipFile(bomb) as archive:
        info = archive.getinfo("SMSSpamCollection")
    declared = info.file_size.to_bytes(4, "little")
    assert raw.count(declared) == 2
    raw = raw.replace(declared, (1000).to_bytes(4, "little"))
    bomb.write_bytes(bytes(raw))

    with pytest.raises(DataError) as error:
        download_sms_spam(tmp_path / "data", source=bomb, urls=[])
    assert str(error.value).startswith(f"{bomb}: ")
    assert contents(tmp_path / "data") == {}


@pytest.mark.parametrize("where", ["source", "data folder"])
def test_oversized_plain_collection_is_refused_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    big = tmp_path / "big.tsv"
    with big.open("wb") as file:
        file.truncate(download.MAX_COLLECTION_BYTES + 1)  # sparse: costs no disk
    monkeypatch.setattr(download, "_parse_tsv", _must_not_run)
    if where == "source":
        with pytest.raises(DataError, match="8,388,609 bytes or more of text"):
            download_sms_spam(tmp_path / "data", source=big, urls=[])
    else:
        data = tmp_path / "data"
        data.mkdir()
        shutil.move(big, data / SMS_SPAM_TSV)
        with pytest.raises(DataError, match=f"{SMS_SPAM_TSV}: 8,388,609 bytes or more"):
            download.load_sms_spam(data)


def test_the_real_sized_collection_is_well_within_the_cap(tmp_path: Path) -> None:
    source = tmp_path / "sms.zip"
    source.write_bytes(zip_archive({"SMSSpamCollection": synthetic_collection()}))
    assert download_sms_spam(tmp_path / "data", source=source, urls=[]).is_file()


# --- Messages longer than the model's context ----------------------------------------------


def test_messages_longer_than_the_context_are_cut_with_a_count(tmp_path: Path) -> None:
    data = synthetic_data(tmp_path / "data")
    with (data / "train.csv").open("a") as file:
        file.write("1," + "WIN " * 40 + "\n")  # 80 tokens, the model reads 32
    with (data / "test.csv").open("a") as file:
        file.write("0," + "lunch " * 50 + "\n")
    lines: list[str] = []

    result = fine_tune(
        TrainingSettings(
            data_dir=str(data),
            weights="random",
            epochs=1,
            context_length="longest",
            config_overrides=TINY,
        ),
        log=lines.append,
    )

    assert result.info.max_length == 32
    assert "Cut 1 training / 0 validation / 1 test messages longer than 32 tokens" in "\n".join(
        lines
    )


def test_the_longest_message_is_capped_at_the_models_context(tmp_path: Path, tokenizer) -> None:
    from ch06_classification.dataset import SpamDataset

    texts = ["see you", "WIN cash " * 30, "lunch at one?"]
    csv = tmp_path / "train.csv"
    csv.write_text("Label,Text\n" + "".join(f"{i % 2},{text}\n" for i, text in enumerate(texts)))
    sizes = [len(tokenizer.encode(text)) for text in texts]
    assert sizes[1] > 16 > max(sizes[0], sizes[2])

    uncapped = SpamDataset(csv, tokenizer)
    capped = SpamDataset(csv, tokenizer, context_length=16)

    assert uncapped.max_length == sizes[1] and uncapped.num_truncated == 0
    assert capped.max_length == 16 and capped.num_truncated == 1
    assert capped.lengths.tolist() == [sizes[0], 16, sizes[2]]
    assert capped.encoded_texts[1] == tokenizer.encode(texts[1])[:16]


# --- Data on the terminal -------------------------------------------------------------------

# Class names that would recolour the terminal, break a line, and retitle the window.
HOSTILE_LABELS = {
    "\x1b[31mred": "invoice refund",
    "a\nb": "parcel courier",
    "\x1b]0;title\x07": "password reset",
}


def assert_printable(output: str) -> None:
    """No escape (ESC, or the one-byte CSI), no bell. (A progress bar's carriage returns
    are the command's own.)"""
    assert not set(output) & {"\x1b", "\x07", "\x9b"}, repr(output)


def test_hostile_class_names_reach_the_terminal_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tiny_models
) -> None:
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    rows = [(label, f"{words} {n}") for n in range(30) for label, words in HOSTILE_LABELS.items()]
    pd.DataFrame(rows, columns=["label", "text"]).to_csv(tmp_path / "own.csv", index=False)
    data = ["--data-dir", "own"]

    with warnings.catch_warnings(record=True) as warned:  # e.g. matplotlib's, about glyphs
        warnings.simplefilter("always")
        assert main(["split", "--csv", "own.csv", *data]) == 0
        train = ["train", *data, "--weights", "random", "--run-dir", "run", "--epochs", "1"]
        assert main([*train, "--context-length", "6"]) == 0
        assert main(["evaluate", *data, "--run-dir", "run"]) == 0
    out, err = capsys.readouterr()
    assert_printable(out + err + "".join(str(warning.message) for warning in warned))
    # Named, escaped and on one line: the split summary, the logs, the tables.
    assert "30 ?[31mred, 30 ?]0;title?, 30 a b" in out
    assert "Classes: 3 (?[31mred, ?]0;title?, a b)" in out
    assert "a b: recall" in out and "true \\ predicted  ?[31mred  ?]0;title?  a b" in out

    messages = ["invoice refund", "parcel courier", "password reset"]
    for output in ([], ["--json"]):
        assert main(["classify", "--run-dir", "run", *output, *messages]) == 0
        out, err = capsys.readouterr()
        assert_printable(out + err)
        lines = out.splitlines()
        assert len(lines) == len(messages)  # one line a message, whatever its label
        assert all(message in line for line, message in zip(lines, messages, strict=True))


# --- Errors that quote data -----------------------------------------------------------------

MANY = 100_000
READABLE = 500  # characters: an error line a person reads whole


def assert_one_short_line(err: str) -> str:
    [line] = err.splitlines()
    assert len(line) < READABLE, f"{len(line):,} characters: {line[:200]}..."
    return line


def test_a_checkpoint_of_a_hundred_thousand_labels_is_refused_in_one_short_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    from safetensors.torch import load_file, save_file

    from ch06_classification.storage.checkpoint import read_classifier_info
    from tests.tiny_classifier import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path)
    description = json.loads(read_classifier_info(path).to_json())
    description["labels"] = [f"l{number}" for number in range(MANY)]
    save_file(load_file(path), str(path), metadata={"gpt_spam": json.dumps(description)})

    assert main(["classify", "--checkpoint", str(path), "hello"]) == 1

    line = assert_one_short_line(capsys.readouterr().err)
    assert "labels ['l0', 'l1', 'l2', 'l3', 'l4', 'l5', ...] (100,000 in all) are not" in line


def test_a_split_report_of_a_hundred_thousand_classes_is_refused_in_one_short_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    data = synthetic_data(tmp_path / "data")
    id2label = {str(number): f"class {number}" for number in range(MANY)}
    (data / "split_report.json").write_text(json.dumps({"id2label": id2label}))

    assert main(["train", "--data-dir", str(data), "--weights", "random"]) == 1

    line = assert_one_short_line(capsys.readouterr().err)
    assert "is damaged (id2label {" in line and "(100,000 in all)" in line


@pytest.mark.parametrize("where", ["split", "classify"])
def test_a_hundred_thousand_columns_are_named_in_one_short_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, checkpoint: Path, where: str
) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"column{n}" for n in range(MANY)) + "\n" + "x," * (MANY - 1) + "x\n")

    if where == "split":
        command = ["split", "--csv", str(wide), "--data-dir", str(tmp_path / "data")]
    else:
        command = ["classify", "--checkpoint", str(checkpoint), "--file", str(wide)]
    assert main(command) == 1

    line = assert_one_short_line(capsys.readouterr().err)
    assert (
        "'column0', 'column1', 'column2', 'column3', 'column4', 'column5', ... (99,994 more)"
        in line
    )


def test_a_label_of_a_megabyte_is_quoted_in_one_short_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    huge = "\x1b[31m" + "spam " * 200_000  # one label, on every row: too few classes
    own = tmp_path / "own.csv"
    own.write_text("text,label\n" + "".join(f'hi {n},"{huge}"\n' for n in range(3)))

    assert main(["split", "--csv", str(own), "--data-dir", str(tmp_path / "data")]) == 1

    line = assert_one_short_line(capsys.readouterr().err)
    assert "every row has the label '\\x1b[31mspam spam" in line  # escaped, cut


def test_any_error_is_one_line_of_readable_length(capsys: pytest.CaptureFixture) -> None:
    """The last line of defence: an error that quotes data without ``printable``'s help."""
    from types import SimpleNamespace

    from ch06_classification.cli.running import ERROR_WIDTH, build_parser, run_command
    from gpt.errors import UserFacingError

    def fail(args: object) -> int:
        raise UserFacingError("bad value \x1b]0;title\x07\n" + "x" * 10**6)

    step = SimpleNamespace(register=lambda steps: steps.add_parser("fail").set_defaults(run=fail))

    assert run_command(build_parser([step]), ["fail"]) == 1

    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("gpt-spam fail: error: bad value ?]0;title? xxx")
    assert len(line) <= len("gpt-spam fail: error: ") + ERROR_WIDTH


# --- JSON files, and what is not a file --------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_JSON = {
    "malformed": (b'{"rows": 3,', "is not valid JSON (Expecting property name"),
    "not UTF-8": (b'{"name": "caf\xe9"}', "is not valid JSON (not UTF-8 text: byte 13 is 0xe9)"),
    # Beyond Python's recursion limit: json.loads raises RecursionError.
    "nested 100,000 deep": (b"[" * 100_000, "nested more than 100 levels deep"),
    # Within it, but deep enough to break what walks the values later (asdict, ==).
    "nested 900 deep": (nested(900).encode(), "nested more than 100 levels deep"),
    "objects nested": (b'{"a": ' * 101 + b"1" + b"}" * 101, "nested more than 100 levels deep"),
}


@pytest.mark.parametrize("case", BAD_JSON)
def test_bad_json_is_one_error_naming_the_file(tmp_path: Path, case: str) -> None:
    data, problem = BAD_JSON[case]
    path = tmp_path / "metrics.json"
    path.write_bytes(data)

    with pytest.raises(FileReadError) as error:
        read_json(path)
    message = str(error.value)
    assert message.startswith(f"{path} ") and problem in message and "\n" not in message


def test_json_as_deep_as_allowed_is_read(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text(nested(MAX_JSON_DEPTH))
    assert read_json(path) is not None
    path.write_text(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(FileReadError, match="nested more than"):
        read_json(path)


def test_a_split_report_nested_too_deeply_is_one_error_naming_it(tmp_path: Path) -> None:
    data = synthetic_data(tmp_path / "data")
    (data / "split_report.json").write_text("[" * 100_000)

    with pytest.raises(DataError) as error:
        read_split(data / "train.csv")
    assert f"{data / 'split_report.json'} is not valid JSON (nested more than" in str(error.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("kind", NOT_FILES)
def test_what_is_not_a_file_is_named_without_being_opened(tmp_path: Path, kind: str) -> None:
    path = put_not_a_file(tmp_path / "config.json", kind)
    expected = f"{path} is {NOT_FILES[kind]}, not a file"

    with never_blocks(path):
        with pytest.raises(FileReadError) as error:
            file_exists(path)
        assert str(error.value) == expected
        with pytest.raises(FileReadError) as error:
            read_json(path)
        assert str(error.value) == expected
    assert file_exists(tmp_path / "nothing.json") is False


def damaged_run(tiny_run: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the shared tiny run, to damage."""
    return Path(shutil.copytree(tiny_run[0], tmp_path / "run"))


RUN_FILES = ("model.safetensors", "config.json", "metrics.json", "training_texts.json")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("kind", NOT_FILES)
@pytest.mark.parametrize("name", RUN_FILES)
def test_a_run_file_that_is_not_a_file_is_named_as_such(
    tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture, name: str, kind: str
) -> None:
    run_dir, data_dir = damaged_run(tiny_run, tmp_path), tiny_run[1]
    path = put_not_a_file(run_dir / name, kind)

    with never_blocks(path):
        status = main(["evaluate", "--run-dir", str(run_dir), "--data-dir", str(data_dir)])

    assert status == 1
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"gpt-spam evaluate: error: {path} is {NOT_FILES[kind]}, not a file"
    ]


@pytest.mark.parametrize("name", ["config.json", "metrics.json", "training_texts.json"])
def test_a_run_file_of_deeply_nested_json_is_one_line_naming_it(
    tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture, name: str
) -> None:
    run_dir, data_dir = damaged_run(tiny_run, tmp_path), tiny_run[1]
    (run_dir / name).write_text("[" * 100_000)

    status = main(["evaluate", "--run-dir", str(run_dir), "--data-dir", str(data_dir)])

    assert status == 1
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"gpt-spam evaluate: error: {run_dir / name} is not valid JSON")
    assert "nested more than 100 levels deep" in error
