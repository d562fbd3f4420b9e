"""The bonus-experiments table: rows as `gpt-spam train` commands, run, resumed, tabulated."""

from __future__ import annotations

import hashlib
import json
import shutil

import pandas as pd
import pytest

from ch06_classification.cli.commands.train import settings_from_args
from ch06_classification.cli.main import build_parser, main
from ch06_classification.extras.experiments import (
    BY_NUMBER,
    SMALL_ROWS,
    row_settings,
    run_experiments,
)
from ch06_classification.finetuning import finetune
from tests.run_cli import gpt_spam
from tests.synthetic_splits import write_synthetic_splits

TINY = {"context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 2}


def settings_of(number: int, weights: str = "random"):
    argv = BY_NUMBER[number].command(weights)
    return settings_from_args(build_parser().parse_args(argv))


def test_rows_are_the_published_settings():
    """Each row changes one thing from the book's recipe (last token, last block)."""
    book = settings_of(1)
    assert (book.token_position, book.trainable_layers, book.model) == (
        "last",
        "last_block",
        "gpt2-small",
    )
    assert settings_of(2).token_position == "first"
    assert settings_of(16).token_position == "flexible"
    assert settings_of(10, weights="pretrained").weights == "random"  # the row's point
    assert settings_of(5, weights="pretrained").weights == "pretrained"
    lora = settings_of(11)
    assert (lora.trainable_layers, lora.lora_rank, lora.lora_alpha) == ("lora", 16, 16.0)
    assert settings_of(12).model == "gpt2-xl" and settings_of(12).lora_alpha == 8.0
    assert settings_of(13).context_length == "model"
    assert settings_of(14).no_padding and settings_of(14).accumulation_steps == 1
    assert settings_of(15).no_padding and settings_of(15).accumulation_steps == 8
    assert settings_of(17).disable_causal_mask and settings_of(19).average_embeddings
    assert all(BY_NUMBER[n].published for n in SMALL_ROWS)
    # The table's token can be the project's: every row follows but those about the token.
    flexible = " ".join(BY_NUMBER[5].command("random", token_position="flexible"))
    assert flexible == "train --token-position flexible --trainable-layers all --weights random"
    assert BY_NUMBER[2].command("random", "flexible")[1:3] == ["--token-position", "first"]
    assert 18 not in BY_NUMBER and {20, 21} <= BY_NUMBER.keys()


@pytest.fixture
def data_dir(tmp_path):
    folder = write_synthetic_splits(tmp_path / "data", sizes=(48, 16, 16))
    shutil.copy(folder / "test.csv", folder / "test_realistic.csv")
    return folder


def test_three_rows_run_resume_and_tabulate(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    out_dir = tmp_path / "table"
    options = {
        "data_dir": data_dir,
        "weights": "random",
        "device": "cpu",
        "overrides": {"epochs": 1, "config_overrides": TINY},
        "log": lambda line: None,
    }
    rows = [BY_NUMBER[2], BY_NUMBER[16], BY_NUMBER[20]]

    # Interrupted during the second row: the first is finished, the second is not.
    real_fine_tune = finetune.fine_tune
    trained: list[str] = []

    def fine_tune(settings, log):
        trained.append(settings.token_position)
        if trained == ["first", "flexible"] and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return real_fine_tune(settings, log)

    interrupted: list[bool] = []
    monkeypatch.setattr(finetune, "fine_tune", fine_tune)
    with pytest.raises(KeyboardInterrupt):
        run_experiments(rows, out_dir, **options)
    assert (out_dir / "02" / "row.json").is_file()
    assert not (out_dir / "16" / "row.json").exists()

    # Resumed: row 2 is skipped, rows 16 and 20 run.
    trained.clear()
    summaries = run_experiments(rows, out_dir, **options)
    assert trained == ["flexible"]  # row 2 was not trained again
    assert [s["number"] for s in summaries] == [2, 16, 20]
    first, flexible, tfidf = summaries
    assert first["path"] == flexible["path"] == "fast"
    assert tfidf["path"] == "scikit-learn" and tfidf["test"] >= 90  # disjoint vocabularies
    assert first["command"] == "train --token-position first --weights random"
    assert first["settings"]["epochs"] == 1  # the overrides are part of what was run
    for summary in summaries:
        assert 0 <= summary["test"] <= 100 and 0 <= summary["test_f1"] <= 1
    assert (out_dir / "16" / "metrics.json").is_file()
    assert not (out_dir / "16" / "model.safetensors").exists()  # figures only, by default

    # The tables hold every finished row.
    assert json.loads((out_dir / "table.json").read_text()) == summaries
    markdown = (out_dir / "table.md").read_text().splitlines()
    assert markdown[0].startswith("| # | setting | train | val | test | test F1 |")
    assert len(markdown) == 2 + 3 and markdown[2].startswith("| 2 | first token")
    assert "78.46 / 80.54 / 75.00" in markdown[2]  # the published figures beside ours
    assert len((out_dir / "table.csv").read_text().splitlines()) == 1 + 3

    # Run again: nothing to do.
    trained.clear()
    assert run_experiments(rows, out_dir, **options) == summaries
    assert trained == []
    # Nor without the cache of the frozen blocks' output: it changes no result.
    no_cache = {**options, "overrides": {**options["overrides"], "no_cache": True}}
    assert run_experiments(rows, out_dir, **no_cache) == summaries
    assert trained == []


def test_a_row_with_the_same_settings_reuses_the_result(data_dir, tmp_path):
    """With --weights random, row 10 (random weights, all layers) is row 5."""
    summaries = run_experiments(
        [BY_NUMBER[5], BY_NUMBER[10]],
        tmp_path / "table",
        data_dir,
        weights="random",
        device="cpu",
        overrides={"epochs": 1, "config_overrides": TINY},
        log=lambda line: None,
    )
    five, ten = summaries
    assert (five["same_as"], ten["same_as"]) == (None, 5)
    assert five["path"] == "full"  # every layer trains
    assert (ten["test"], ten["minutes"]) == (five["test"], five["minutes"])
    assert ten["command"] == "train --token-position last --weights random --trainable-layers all"


def test_list_and_bad_rows_from_the_command_line(tmp_path):
    listed = gpt_spam("experiments", "--list", "--weights", "random", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "gpt-spam train --token-position last --no-padding --accumulation-steps 8" in (
        listed.stdout
    )
    assert "test 95.00 %, 0.28 min (A100, pretrained weights)" in listed.stdout
    # Row 10 is the published row trained from random weights, and says so.
    row_10 = listed.stdout.split("\n\n")[9]
    assert row_10.startswith("10  random weights, all layers")
    assert row_10.endswith("test 93.67 %, 0.69 min (A100, random weights)"), row_10
    assert "21  baseline: majority class" in listed.stdout
    bad = gpt_spam("experiments", "--rows", "1,18", cwd=tmp_path)
    assert bad.returncode == 2 and "expected row numbers among" in bad.stderr


def test_a_rows_command_names_a_chosen_precision():
    row = BY_NUMBER[5]
    assert row.command("random", precision="bf16") == [
        "train", "--token-position", "last", "--trainable-layers", "all",
        "--weights", "random", "--precision", "bf16",
    ]  # fmt: skip
    assert row.command("random", precision="fp32")[-2:] == ["--precision", "fp32"]
    settings = row_settings(row, "random", precision="bf16")
    assert (settings.precision, settings.trainable_layers) == ("bf16", "all")


def test_rows_train_in_auto_precision_by_default():
    """Like `train`, every row takes bfloat16 only where the hardware has native units."""
    from ch06_classification.cli.commands import experiments
    from ch06_classification.cli.running import build_parser

    args = build_parser([experiments]).parse_args(["experiments", "--rows", "1"])
    assert args.precision == "auto"
    row = BY_NUMBER[5]
    assert "--precision" not in row.command("random")  # auto, train's default, is implied
    assert row_settings(row, "random").precision == "auto"


def write_labelled_split(folder, test_labels: list[int]):
    """Splits whose training set is mostly class 0 and whose test set has ``test_labels``:
    the majority baseline's test accuracy is the share of 0 in them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels in (("train", [0, 0, 0, 1]), ("validation", [0, 1]), ("test", test_labels)):
        texts = [f"{name} message {i}" for i in range(len(labels))]
        pd.DataFrame({"Label": labels, "Text": texts}).to_csv(folder / f"{name}.csv", index=False)
    return folder


def test_a_row_finished_on_another_split_runs_again(tmp_path):
    """Split again (another seed, other rows): a finished row's figures are of the old
    split, so the row runs again, and says why; a row not run again leaves the table."""
    pytest.importorskip("sklearn")
    data = write_labelled_split(tmp_path / "data", [0, 0, 0, 1])
    lines: list[str] = []
    options = {"weights": "random", "device": "cpu", "log": lines.append}
    majority, tfidf = BY_NUMBER[21], BY_NUMBER[20]
    _, first = run_experiments([majority, tfidf], tmp_path / "table", data, **options)
    assert first["test"] == 75.0

    write_labelled_split(data, [0, 1, 1, 1])
    lines.clear()
    (again,) = run_experiments([majority], tmp_path / "table", data, **options)
    assert again["test"] == 25.0  # the new split's figure, not the finished row's 75
    assert (
        "[1/1] row 21: finished earlier on another split (its files have changed since): "
        "runs again" in lines
    )
    # Row 20 ran on the old split: not in the table of this one, and the log says so.
    assert [
        row["number"] for row in json.loads((tmp_path / "table" / "table.json").read_text())
    ] == [21]
    assert any(
        line.startswith("Row 20 of ") and "--rows 20 runs them again" in line for line in lines
    )

    lines.clear()
    assert run_experiments([majority], tmp_path / "table", data, **options) == [again]
    assert lines[0] == "[1/1] row 21: finished earlier, skipped"


def test_a_row_finished_with_other_settings_runs_again(data_dir, tmp_path):
    lines: list[str] = []
    options = {"weights": "random", "device": "cpu", "log": lines.append}
    tiny = {"config_overrides": TINY}
    run_experiments(
        [BY_NUMBER[16]], tmp_path / "table", data_dir, overrides={"epochs": 1, **tiny}, **options
    )
    lines.clear()
    (row,) = run_experiments(
        [BY_NUMBER[16]], tmp_path / "table", data_dir, overrides={"epochs": 2, **tiny}, **options
    )
    assert "[1/1] row 16: finished earlier with other settings (epochs): runs again" in lines
    assert row["settings"]["epochs"] == 2


def folder_bytes(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_experiments_never_split_over_a_split_of_other_data(
    shared_data, tmp_path, monkeypatch, capsys
):
    """`--sms-source` asks for the SMS collection; a data folder holding the split of your
    own texts (no realistic test set) is left as it is, and the command says so."""
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "mine.csv"
    texts = [f"{word} text {i}" for i, word in enumerate(["spam", "ham"] * 20)]
    pd.DataFrame({"text": texts, "label": ["b", "a"] * 20}).to_csv(own, index=False)
    assert main(["split", "--csv", str(own), "--data-dir", "data"]) == 0
    before = folder_bytes(tmp_path / "data")
    capsys.readouterr()

    args = ["experiments", "--rows", "21", "--data-dir", "data", "--out-dir", "table"]
    sms = ["--sms-source", str(shared_data / "sms_spam_collection.zip")]
    assert main([*args, *sms]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"error: data holds a split of {own}, not of the SMS Spam Collection: " in error
    assert "give another --data-dir" in error
    assert folder_bytes(tmp_path / "data") == before
    # Without --sms-source, the rows use the split that is there, and say whose it is.
    pytest.importorskip("sklearn")
    assert main(args) == 0
    assert f"The rows use the split in data (of {own})" in capsys.readouterr().out
    assert folder_bytes(tmp_path / "data") == before


def test_an_sms_split_is_used_as_it_is(real_splits, shared_data, tmp_path, capsys):
    """The folder's split is the SMS collection's already: not split again, and each row
    records the split files it ran on."""
    pytest.importorskip("sklearn")
    data = shutil.copytree(real_splits, tmp_path / "data")
    before = folder_bytes(data)
    sms = ["--sms-source", str(shared_data / "sms_spam_collection.zip")]
    out_dir = tmp_path / "table"
    args = ["experiments", "--rows", "21", "--data-dir", str(data), "--out-dir", str(out_dir)]
    assert main([*args, *sms]) == 0
    assert "=== gpt-spam" not in capsys.readouterr().out
    assert folder_bytes(data) == before
    recorded = json.loads((out_dir / "21" / "row.json").read_text())["data"]
    assert recorded == {
        name: hashlib.sha256(content).hexdigest()
        for name, content in before.items()
        if name.endswith(".csv")
    }
