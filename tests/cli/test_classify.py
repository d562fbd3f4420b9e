"""`gpt-spam classify`: messages from arguments, files and standard input.

Most tests call the command in this process (``main([...])``, fast); some run it the way
a user does, in a fresh process, for what only a real process shows: the default run
folder, bytes on standard input, a one-line error with no traceback, and streams (an
endless pipe answered as it arrives in bounded memory, a long file answered before it is
read, a reader that goes away).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import runpy
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from ch06_classification.classifying.spam_classifier import SpamClassifier
from ch06_classification.cli.main import main
from ch06_classification.storage.checkpoint import CHECKPOINT_NAME, read_classifier_info
from tests.run_cli import ROOT, command, environment, gpt_spam, start_gpt_spam
from tests.tiny_classifier import MAX_LENGTH, MESSAGES, write_tiny_checkpoint

LINE = re.compile(r"(ham|spam) +([01]\.\d{3})  (.*)")  # label, probability, message
LONG_MESSAGE = "Congratulations! " * 200  # far longer than the model's context


@pytest.fixture(scope="module")
def classifier(checkpoint: Path) -> SpamClassifier:
    return SpamClassifier.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages are shortened to the terminal's width: make it the same everywhere."""
    monkeypatch.setenv("COLUMNS", "200")


def classify(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, list[str], list[str]]:
    """Run ``gpt-spam classify ARGS`` here: exit status, stdout lines, stderr lines."""
    # On the CPU, so the numbers match those of `classifier`; a test's own --device wins.
    status = main(["classify", "--device", "cpu", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def parse(lines: list[str]) -> list[tuple[str, float, str]]:
    matches = [LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    return [(m[1], float(m[2]), m[3]) for m in matches]


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


# --- In a fresh process -------------------------------------------------------------


def test_a_message_is_classified_with_the_latest_run(
    tmp_path: Path, classifier: SpamClassifier
) -> None:
    write_tiny_checkpoint(tmp_path / "runs" / "20260101-000000")
    message = MESSAGES[0]

    result = gpt_spam("classify", message, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    # The user named no run: stderr says which one answered, and its classes, in one line
    # before anything else (stdout stays the results). This one does not say what it was
    # trained on, so it is not known to be a run of data/.
    assert result.stderr == (
        "gpt-spam classify: using runs/20260101-000000/, the latest run (none in runs/ was "
        "trained on data/; this one does not say what it was trained on) (classes: ham, "
        "spam; gpt2-small from random weights, last_block trained)\n"
    )
    [(label, probability, text)] = parse(result.stdout.splitlines())
    assert (label, text) == (classifier.predict(message), message)
    assert probability == pytest.approx(classifier.predict_proba(message)[0, 1], abs=5e-4)


def test_without_a_run_dir_the_latest_run_of_the_data_folder_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A run of your own CSV, trained last, does not answer a plain `classify` of an SMS:
    the latest run trained on data/ (or on --data-dir) does."""
    from ch06_classification.storage.datafiles import id2label

    monkeypatch.chdir(tmp_path)
    for name, data_dir, hours_ago in (("sms", "data", 2), ("tickets", "data/tickets", 1)):
        checkpoint = write_tiny_checkpoint(tmp_path / "runs" / name)
        metrics = {"id2label": id2label(("ham", "spam")), "settings": {"data_dir": data_dir}}
        (checkpoint.parent / "metrics.json").write_text(json.dumps(metrics))
        stamp = 1_800_000_000 - 3600 * hours_ago
        os.utime(checkpoint, (stamp, stamp))

    status, _, err = classify(capsys, MESSAGES[0])
    assert status == 0
    assert err[0].startswith(
        "gpt-spam classify: using runs/sms/, the latest run trained on data/ (classes: ham, spam;"
    )
    status, _, err = classify(capsys, "--data-dir", "data/tickets", MESSAGES[0])
    assert status == 0
    assert err[0].startswith("gpt-spam classify: using runs/tickets/, the latest run trained on")


def test_standard_input_with_invalid_utf8_as_json(
    tmp_path: Path, checkpoint: Path, classifier: SpamClassifier
) -> None:
    data = b"\xef\xbb\xbfLunch at 1?\r\n\n   \nwin \xff\xfe cash now\n"  # BOM, CRLF, blanks

    result = gpt_spam(
        "classify",
        "--checkpoint",
        checkpoint,
        "--device",
        "cpu",
        "--json",
        "-",
        input=data,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    texts = ["Lunch at 1?", "win \ufffd\ufffd cash now"]
    assert [row["text"] for row in rows] == texts
    expected = classifier.predict_proba(texts)[:, 1]
    np.testing.assert_allclose([row["spam_probability"] for row in rows], expected, atol=1e-5)
    assert [row["label"] for row in rows] == classifier.predict(texts).tolist()
    assert all(row.keys() == {"text", "label", "spam_probability"} for row in rows)


def test_a_truncated_checkpoint_is_one_line_naming_the_file(
    tmp_path: Path, checkpoint: Path
) -> None:
    damaged = tmp_path / CHECKPOINT_NAME
    damaged.write_bytes(checkpoint.read_bytes()[:100_000])

    result = gpt_spam("classify", "--checkpoint", damaged, "hello", cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"gpt-spam classify: error: {damaged} is not a readable")
    assert result.stdout == ""


# --- Streams: answered as they arrive (fresh processes) ----------------------------------

PROC = Path("/proc/self")
needs_proc = pytest.mark.skipif(not PROC.is_dir(), reason="reads the process's state in /proc")


@contextmanager
def running(*args: str | Path, cwd: Path, limit: float = 180) -> Iterator[subprocess.Popen]:
    """``gpt-spam ARGS`` started, killed at the end of the block, or after ``limit`` seconds
    (a safety net: a read from a process that hangs would otherwise never end)."""
    process = start_gpt_spam(*args, cwd=cwd)
    watchdog = threading.Timer(limit, process.kill)
    watchdog.start()
    try:
        yield process
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            with suppress(OSError, ValueError):  # e.g. a broken pipe, flushing stdin
                pipe.close()


def feed_endlessly(process: subprocess.Popen, line: Callable[[int], str]) -> None:
    """Write ``line(0)``, ``line(1)``, ... to the process's stdin, in a thread, until it stops
    reading (like ``yes``, but numbered)."""

    def write() -> None:
        try:
            for number in itertools.count():
                process.stdin.write(f"{line(number)}\n".encode())
        except (OSError, ValueError):  # the process ended: a broken pipe, a closed file
            pass

    threading.Thread(target=write, daemon=True).start()


def peak_memory_kib(pid: int) -> int:
    """The most resident memory the process has had (VmHWM), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)[1])


def read_position(pid: int, path: Path) -> int | None:
    """How far the process has read into ``path``, if it has the file open."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if Path(os.readlink(fd)) == path:
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                return int(re.search(r"^pos:\s+(\d+)", info, re.MULTILINE)[1])
        except OSError:  # a descriptor closed meanwhile
            continue
    return None


@needs_proc
def test_an_endless_stream_is_answered_in_order_as_it_arrives_in_bounded_memory(
    tmp_path: Path, checkpoint: Path
) -> None:
    # Numbered messages of ~2 KB: keeping those read would show in memory, soon.
    padding = " win a prize" * 170
    first, later = 500, 2000
    command = ["classify", "--checkpoint", checkpoint, "--device", "cpu", "--json", "-"]

    with running(*command, cwd=tmp_path) as process:
        feed_endlessly(process, lambda number: f"message {number}{padding}")
        peaks = {}
        for number in range(later):
            row = json.loads(process.stdout.readline())
            assert row["text"] == f"message {number}{padding}"  # in order, none left out
            if number + 1 in (first, later):
                peaks[number + 1] = peak_memory_kib(process.pid)
        assert process.poll() is None  # still classifying the endless input

    # Read as a whole (or kept), the 1,500 messages between the two would add ~3 MB.
    between = (later - first) * len(padding) / 1024
    assert peaks[later] - peaks[first] < between / 2, (peaks, between)


@needs_proc
@pytest.mark.parametrize("name", ["inbox.txt", "inbox.csv"])
def test_a_long_file_is_answered_before_it_is_read(
    tmp_path: Path, checkpoint: Path, name: str
) -> None:
    inbox = tmp_path / name
    texts = [f"message {number}" for number in range(200_000)]
    inbox.write_text(("Text\n" if name.endswith(".csv") else "") + "\n".join(texts) + "\n")
    command = ["classify", "--checkpoint", checkpoint, "--device", "cpu", "--json"]

    with running(*command, "--file", inbox, cwd=tmp_path) as process:
        answers = [json.loads(process.stdout.readline())["text"] for _ in range(10)]
        position = read_position(process.pid, inbox)

    assert answers == texts[:10]
    # Still open, and read only a little way in: the rest is read as it is classified.
    assert position is not None
    assert position < inbox.stat().st_size / 10


def test_a_reader_that_goes_away_ends_the_stream_quietly(tmp_path: Path, checkpoint: Path) -> None:
    command = ["classify", "--checkpoint", checkpoint, "--device", "cpu", "--precision", "fp32"]

    with running(*command, "-", cwd=tmp_path) as process:
        feed_endlessly(process, lambda number: f"message {number}")
        assert process.stdout.readline().endswith(b"  message 0\n")
        process.stdout.close()  # as `gpt-spam classify - | head -1` does
        status = process.wait(timeout=120)
        stderr = process.stderr.read().decode()

    assert status == 141  # as a shell reports a program stopped by a closed pipe
    assert stderr == ""  # no error, no traceback, no "Exception ignored"


def test_a_closed_stdout_is_one_line(tmp_path: Path, checkpoint: Path) -> None:
    # `gpt-spam classify - >&-`: results would have nowhere to go, however long the input.
    classify = command(("classify", "--checkpoint", checkpoint, "-"))
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *classify],
        cwd=tmp_path,
        env=environment(),
        input=b"ok\n",
        capture_output=False,
        stderr=subprocess.PIPE,
        timeout=120,
    )

    assert result.returncode == 1
    assert result.stderr.decode() == (
        "gpt-spam classify: error: standard output is closed: there is nowhere to print results\n"
    )


# --- Where messages come from ---------------------------------------------------------


def test_several_arguments_are_printed_in_their_order(
    capsys: pytest.CaptureFixture, checkpoint: Path, classifier: SpamClassifier
) -> None:
    status, out, err = classify(capsys, "--checkpoint", checkpoint, "--batch-size", "2", *MESSAGES)

    assert status == 0
    assert err == [  # two of the messages are longer than the tiny run's max_length
        f"gpt-spam classify: note: 2 messages are longer than {MAX_LENGTH} tokens; "
        f"each was classified on its first {MAX_LENGTH}"
    ]
    results = parse(out)
    assert [text for _, _, text in results] == list(MESSAGES)
    assert [label for label, _, _ in results] == classifier.predict(list(MESSAGES)).tolist()
    expected = classifier.predict_proba(list(MESSAGES))[:, 1]
    np.testing.assert_allclose([p for _, p, _ in results], expected, atol=5e-4)


def test_a_text_file_has_one_message_per_line_and_blank_lines_are_skipped(
    capsys: pytest.CaptureFixture, tmp_path: Path, checkpoint: Path
) -> None:
    inbox = tmp_path / "inbox.txt"
    # A byte-order mark, Windows line ends, blank lines, and a byte that is not UTF-8.
    inbox.write_bytes(b"\xef\xbb\xbfLunch at 1?\r\n\r\n  \nok\n\ncaf\xe9 at 5\n")

    status, out, err = classify(capsys, "--checkpoint", checkpoint, "--file", inbox)

    assert (status, err) == (0, [])
    assert [text for _, _, text in parse(out)] == ["Lunch at 1?", "ok", "caf\ufffd at 5"]


def test_a_csv_file_gives_its_text_column(
    capsys: pytest.CaptureFixture, tmp_path: Path, checkpoint: Path
) -> None:
    inbox = tmp_path / "inbox.csv"
    inbox.write_text('Label,Text\n1,"Win cash,\nnow"\n\n0,Lunch at 1?\n')

    status, out, err = classify(capsys, "--checkpoint", checkpoint, "--json", "--file", inbox)

    assert (status, err) == (0, [])
    assert [json.loads(line)["text"] for line in out] == ["Win cash,\nnow", "Lunch at 1?"]


def test_a_csv_column_can_be_named_and_an_empty_cell_is_reported_by_line(
    capsys: pytest.CaptureFixture, tmp_path: Path, checkpoint: Path
) -> None:
    inbox = tmp_path / "inbox.CSV"
    inbox.write_text('id,sms\n1,"two\nlines"\n2,\n3,Lunch at 1?\n')

    status, out, err = classify(
        capsys, "--checkpoint", checkpoint, "--file", inbox, "--column", "sms"
    )

    assert status == 1  # a message was refused; the others are still classified
    assert [text for _, _, text in parse(out)] == ["two lines", "Lunch at 1?"]
    assert err == [
        f"gpt-spam classify: error: line 4 of {inbox}: the message is empty; not classified"
    ]


def test_standard_input_is_read_when_the_only_message_is_a_dash(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, checkpoint: Path
) -> None:
    feed_stdin(monkeypatch, "ok\n\nLunch at 1? \N{PARTY POPPER}\n".encode())

    status, out, err = classify(capsys, "--checkpoint", checkpoint, "-")

    assert (status, err) == (0, [])
    assert [text for _, _, text in parse(out)] == ["ok", "Lunch at 1? \N{PARTY POPPER}"]


def test_an_empty_message_among_others_is_reported_and_the_rest_classified(
    capsys: pytest.CaptureFixture, checkpoint: Path
) -> None:
    status, out, err = classify(capsys, "--checkpoint", checkpoint, "ok", " ", "Lunch at 1?")

    assert status == 1
    assert [text for _, _, text in parse(out)] == ["ok", "Lunch at 1?"]
    assert err == ["gpt-spam classify: error: message 2: the message is empty; not classified"]


def test_bytes_that_were_not_utf8_in_an_argument_are_replaced(
    capsys: pytest.CaptureFixture, checkpoint: Path
) -> None:
    # On Linux, Python keeps an undecodable byte of sys.argv as a lone surrogate.
    status, out, _ = classify(capsys, "--checkpoint", checkpoint, "--json", "win \udcff cash")

    assert status == 0
    assert json.loads(out[0])["text"] == "win \ufffd cash"


# --- What is printed ------------------------------------------------------------------


def test_the_threshold_moves_a_borderline_message(
    capsys: pytest.CaptureFixture, checkpoint: Path, classifier: SpamClassifier
) -> None:
    message = MESSAGES[4]
    probability = float(classifier.predict_proba(message)[0, 1])

    def label_at(threshold: float) -> str:
        status, out, _ = classify(
            capsys, "--checkpoint", checkpoint, "--threshold", str(threshold), "--json", message
        )
        assert status == 0
        return json.loads(out[0])["label"]

    assert label_at(probability - 1e-3) == "spam"
    assert label_at(probability + 1e-3) == "ham"


def test_a_message_far_longer_than_the_context_is_cut_with_a_note(
    capsys: pytest.CaptureFixture, checkpoint: Path, classifier: SpamClassifier
) -> None:
    status, out, err = classify(capsys, "--checkpoint", checkpoint, "--json", LONG_MESSAGE, "ok")

    assert status == 0
    row = json.loads(out[0])
    assert row["text"] == LONG_MESSAGE  # the whole message is echoed, not its first tokens
    assert row["spam_probability"] == pytest.approx(
        classifier.predict_proba(LONG_MESSAGE)[0, 1], abs=1e-5
    )
    assert err == [
        f"gpt-spam classify: note: 1 message is longer than {MAX_LENGTH} tokens; "
        f"it was classified on its first {MAX_LENGTH}"
    ]


def test_a_message_is_shortened_to_one_safe_line(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, checkpoint: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    message = "WIN\x1b[31m cash\nnow " + "x" * 100

    status, out, _ = classify(capsys, "--checkpoint", checkpoint, message)

    assert status == 0
    [line] = out
    assert line.endswith("  WIN?[31m cash now xxxxx...")  # no escape code, no line break
    assert len(line) == 39  # fits the 40 columns, with the cursor's column to spare


def test_what_stdout_cannot_encode_is_printed_as_a_question_mark(
    monkeypatch: pytest.MonkeyPatch, checkpoint: Path
) -> None:
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")  # e.g. a pipe under LANG=C
    monkeypatch.setattr(sys, "stdout", stdout)

    status = main(["classify", "--checkpoint", str(checkpoint), "Lunch? \N{PARTY POPPER}"])

    assert status == 0
    stdout.flush()
    assert stdout.buffer.getvalue().decode("ascii").endswith("  Lunch? ?\n")


def test_the_progress_bar_is_shown_on_request_only(
    capsys: pytest.CaptureFixture, checkpoint: Path
) -> None:
    args = ["--checkpoint", checkpoint, "--batch-size", "1", "ok", "Lunch at 1?"]

    assert classify(capsys, *args)[2] == []  # two batches, but stderr is not a terminal here
    status, out, err = classify(capsys, *args, "--progress")

    assert (status, len(out)) == (0, 2)
    assert any("Classifying" in line for line in err)


# --- Bad input: one line on stderr, exit status 1 -----------------------------------------


def rewrite_description(path: Path, description: str) -> Path:
    """Keep the checkpoint's tensors, replace its description (safetensors metadata)."""
    save_file(load_file(path), str(path), metadata={"gpt_spam": description})
    return path


def mismatched_checkpoint(folder: Path) -> Path:
    """A checkpoint that describes a wider model than its tensors are."""
    path = write_tiny_checkpoint(folder)
    info = read_classifier_info(path)
    # A consistent description (its recorded overrides follow the new width), wrong tensors.
    wider = replace(info, config=replace(info.config, emb_dim=64), config_overrides=None)
    return rewrite_description(path, wider.to_json())


def description_not_an_object(folder: Path) -> Path:
    return rewrite_description(write_tiny_checkpoint(folder), "[1, 2]")


@pytest.mark.parametrize(
    ("make_checkpoint", "expected"),
    [
        (lambda folder: folder / "nowhere", "does not exist"),
        (mismatched_checkpoint, "does not match the model"),
        (description_not_an_object, "has an invalid description"),
    ],
    ids=["missing", "mismatched", "description-not-an-object"],
)
def test_a_bad_checkpoint_is_one_line_naming_the_file(
    capsys: pytest.CaptureFixture, tmp_path: Path, make_checkpoint, expected: str
) -> None:
    path = make_checkpoint(tmp_path)

    status, out, err = classify(capsys, "--checkpoint", path, "hello")

    assert (status, out, len(err)) == (1, [], 1)
    assert err[0].startswith("gpt-spam classify: error: ")
    assert expected in err[0]
    assert str(path) in err[0]


def test_without_a_trained_run_it_says_what_to_run(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)

    status, out, err = classify(capsys, "hello")

    assert (status, out, len(err)) == (1, [], 1)
    assert "run `gpt-spam train` (scripts/03_train.py) first" in err[0]


@pytest.mark.parametrize(
    ("args", "file_bytes", "expected"),
    [
        ([""], None, "error: the message is empty"),
        (["  \n "], None, "error: the message is empty"),
        ([], None, "nothing to classify"),
        (["-", "ok"], None, "- (read standard input) must be the only message"),
        (["--file", "{file}", "ok"], b"ok\n", "not both"),
        (["--file", "{file}"], b"", "has no messages"),
        (["--file", "{file}"], b"\n  \r\n\n", "has no messages"),
        (["--file", "{missing}"], None, "no such file"),
        (["--file", "{folder}"], None, "is a folder"),
        (["--file", "{file}", "--column", "Text"], b"ok\n", "--column applies to a .csv"),
        (["--file", "{csv}"], b"", "is empty"),
        (["--file", "{csv}"], b"Label,Text\n", "has a header but no messages"),
        (["--file", "{csv}"], b"label,message\n0,ok\n", "has no column 'Text'"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_1(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    checkpoint: Path,
    args: list[str],
    file_bytes: bytes | None,
    expected: str,
) -> None:
    paths = {
        "file": tmp_path / "inbox.txt",
        "csv": tmp_path / "inbox.csv",
        "missing": tmp_path / "missing.txt",
        "folder": tmp_path,
    }
    args = [arg.format(**paths) for arg in args]
    if file_bytes is not None:
        for name in ("file", "csv"):
            paths[name].write_bytes(file_bytes)

    status, out, err = classify(capsys, "--checkpoint", checkpoint, *args)

    assert (status, out, len(err)) == (1, [], 1), err
    assert err[0].startswith("gpt-spam classify: error: ")
    assert expected in err[0]


def test_empty_standard_input_is_an_error(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, checkpoint: Path
) -> None:
    feed_stdin(monkeypatch, b"\n\n")

    status, out, err = classify(capsys, "--checkpoint", checkpoint, "-")

    assert (status, out) == (1, [])
    assert err == [
        "gpt-spam classify: error: standard input has no messages: it is empty or only blank lines"
    ]


def test_the_numbered_script_is_the_command(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, checkpoint: Path
) -> None:
    monkeypatch.setattr(sys, "argv", ["05_classify.py", "--checkpoint", str(checkpoint), "ok"])

    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "scripts" / "05_classify.py"), run_name="__main__")

    assert exit_.value.code == 0
    assert [text for _, _, text in parse(capsys.readouterr().out.splitlines())] == ["ok"]
