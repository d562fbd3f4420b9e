"""Your own labelled texts: `split --csv/--tsv`, any number of classes, end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics
import torch

from ch06_classification.cli.main import main
from ch06_classification.evaluating.metrics import multiclass_metrics
from ch06_classification.finetuning import finetune
from ch06_classification.sources.labelled_texts import class_names_of, read_labelled_texts
from ch06_classification.sources.split_files import (
    make_splits,
    read_split,
    split_labelled_texts,
    undersample,
)
from ch06_classification.splits import create_balanced_dataset
from ch06_classification.storage.datafiles import SPLIT_FILES, SPLIT_REPORT, DataError

# Three classes with their own words: any working model tells them apart.
VOCABULARY = {
    "billing": ["invoice", "refund", "charge", "card", "payment", "bill", "overcharged", "paid"],
    "shipping": ["parcel", "delivery", "courier", "tracking", "arrived", "late", "box", "shipped"],
    "login": ["password", "account", "locked", "reset", "username", "sign", "email", "code"],
}


def ticket(label: str, rng: random.Random) -> str:
    return " ".join(rng.choice(VOCABULARY[label]) for _ in range(rng.randint(3, 12)))


def write_tickets(path: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """A CSV of support tickets in the column order a user's export might have."""
    rng = random.Random(seed)
    rows = [(label, ticket(label, rng)) for label, n in counts.items() for _ in range(n)]
    rng.shuffle(rows)
    frame = pd.DataFrame(
        {"id": range(len(rows)), "body": [t for _, t in rows], "team": [lb for lb, _ in rows]}
    )
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def tiny_models(monkeypatch):
    """gpt2-small's vocabulary and context, but 2 blocks 32 wide: seconds, not minutes."""
    build = finetune.build_classifier

    def tiny(*args, **kwargs):
        return build(*args, **{**kwargs, "emb_dim": 32, "n_layers": 2, "n_heads": 4})

    monkeypatch.setattr(finetune, "build_classifier", tiny)


# --- Reading the file -------------------------------------------------------------------


def test_labels_become_classes_in_sorted_order() -> None:
    assert class_names_of(["spam", "ham", "spam"]) == ("ham", "spam")
    assert class_names_of(["10", "2", "1"]) == ("1", "2", "10")  # numbers as numbers
    assert class_names_of(["b", "10", "a"]) == ("10", "a", "b")


def test_a_tsv_takes_quotes_as_text(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_text('label\ttext\nham\t"Hi\nspam\tWIN "now"\nham\tNA\n', encoding="utf-8")

    df = read_labelled_texts(path, fmt="tsv")

    assert df["Text"].tolist() == ['"Hi', 'WIN "now"', "NA"]
    assert df["Label"].tolist() == ["ham", "spam", "ham"]


@pytest.mark.parametrize(
    ("content", "columns", "message"),
    [
        ("text,label\nhi,a\nyo,b\n", ("body", "label"), "no column 'body' (its columns: 'text'"),
        ("text,label\nhi,a\nyo,b\n", ("text", "team"), "name it with --label-column"),
        ("text,label\nhi,a\nyo,a\n", ("text", "label"), "every row has the label 'a'"),
        ("text,label\nhi,a\n  ,b\n,b\n", ("text", "label"), "data row 2 has an empty 'text' (2"),
        ("text,label\nhi,a\nyo,\n", ("text", "label"), "data row 2 has an empty 'label'"),
        ("text,label\n", ("text", "label"), "a header but no rows"),
        ("", ("text", "label"), "the file is empty"),
    ],
)
def test_what_cannot_be_split_is_one_line(
    tmp_path: Path, content: str, columns: tuple[str, str], message: str
) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(DataError, match=f"^{path}: .*") as error:
        read_labelled_texts(path, *columns)
    assert message in str(error.value) and "\n" not in str(error.value)


def two_hundred_rows(broken: str | None = None, at: int = 50) -> str:
    """A CSV of 200 labelled texts; ``broken`` replaces the text of data row ``at``."""
    rows = [f"message number {i},{'ham' if i % 3 else 'spam'}\n" for i in range(200)]
    if broken is not None:
        rows[at] = f"{broken},{'ham' if at % 3 else 'spam'}\n"
    return "text,label\n" + "".join(rows)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        # A quote never closed: without a closing one later, the rest of the file is its text.
        ('"Free entry in 2 a wkly comp', "line 52: a quote opens a text that is not closed on "
         "its line and runs on to the end of the file"),
        # Closed by chance on a later line (an inch mark): rows 52 to 54 would be one text.
        ('"Free entry in 2 a wkly comp,spam\nCall me,ham\nGet a 5"', "lines 52 to 54 read "
         "as one row, yet more than one of them is a row by itself"),
        # Text after a closing quote: not one CSV field (pandas reads it as 'hi there').
        ('"hi" there', 'line 52 is not one CSV record (\',\' expected after \'"\')'),
        ("hello, world", "line 52 has 3 fields and the header 2: a text with a comma in it"),
    ],
)  # fmt: skip
def test_a_row_that_is_not_one_record_is_refused_with_its_line(
    tmp_path: Path, broken: str, message: str
) -> None:
    """Never two rows merged into one text, a row lost: 199 texts for a 200-row file."""
    path = tmp_path / "data.csv"
    path.write_text(two_hundred_rows(broken), encoding="utf-8")

    with pytest.raises(DataError) as error:
        read_labelled_texts(path)
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value)


def test_quoted_texts_are_read_as_written(tmp_path: Path) -> None:
    """Quotes that close where their text ends are CSV's own: a line break, a comma, or a
    doubled quote inside them is text, and a quote inside an unquoted text is a quote."""
    texts = ["two\nlines", "Hi, mum\nsee you at 5, love", 'say "hi"', 'a 5" screen', "line\r\nend"]
    path = tmp_path / "data.csv"
    pd.DataFrame({"text": texts, "label": ["ham", "spam"] * 2 + ["ham"]}).to_csv(path, index=False)
    with path.open("a", encoding="utf-8") as file:
        file.write('he said "yes" twice,spam\n')

    df = read_labelled_texts(path)

    assert df["Text"].tolist() == [*texts, 'he said "yes" twice']
    assert df["Label"].tolist() == ["ham", "spam", "ham", "spam", "ham", "spam"]


def test_split_refuses_a_broken_row_and_writes_nothing(tmp_path: Path, capsys) -> None:
    path = tmp_path / "data.csv"
    path.write_text(two_hundred_rows('"Free entry in 2 a wkly comp'), encoding="utf-8")
    assert main(["split", "--csv", str(path), "--data-dir", str(tmp_path / "data")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "line 52: a quote opens a text" in error
    assert not (tmp_path / "data").exists()  # the folder made for the split is gone again
    path.write_text(two_hundred_rows(), encoding="utf-8")
    assert main(["split", "--csv", str(path), "--data-dir", str(tmp_path / "data")]) == 0
    assert "Collection: 200 texts" in capsys.readouterr().out


def test_a_label_column_with_thousands_of_values_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    pd.DataFrame({"text": ["some text"] * 3000, "label": range(3000)}).to_csv(path, index=False)

    with pytest.raises(DataError, match="'label' has 3,000 distinct values, more than the 1,000"):
        read_labelled_texts(path)


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"text,label\ncaf\xe9,a\nyo,b\n")
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 14 is 0xe9\)"):
        read_labelled_texts(path)


# --- Splitting ----------------------------------------------------------------------------


def frame(counts: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame(
        [(label, f"{label} text {i}") for label, n in counts.items() for i in range(n)],
        columns=["Label", "Text"],
    )


def test_stratified_splits_keep_each_class_share() -> None:
    df = frame({"a": 500, "b": 300, "c": 200})

    splits = split_labelled_texts(df, ("a", "b", "c"), fractions=(0.6, 0.2, 0.2), seed=1)

    for split, fraction in zip(splits[:3], (0.6, 0.2, 0.2), strict=True):
        counts = split["Label"].value_counts().sort_index().tolist()
        assert counts == [round(500 * fraction), round(300 * fraction), round(200 * fraction)]
    every_text = pd.concat(splits[:3])["Text"]
    assert sorted(every_text) == sorted(df["Text"])  # each row in exactly one split
    assert splits.test_realistic is None  # nothing was left out to draw on
    # the classes are mixed, not one block after the other
    assert splits.train["Label"].iloc[:50].nunique() == 3


def test_undersample_is_the_books_balancing_for_two_classes() -> None:
    df = frame({"ham": 300, "spam": 60}).sample(frac=1, random_state=0)

    pd.testing.assert_frame_equal(
        undersample(df, ("ham", "spam"), seed=123), create_balanced_dataset(df, seed=123)
    )


def test_undersampling_three_classes_and_the_realistic_set() -> None:
    df = frame({"a": 600, "b": 300, "c": 100})

    splits = split_labelled_texts(df, ("a", "b", "c"), balance="undersample", seed=3)

    balanced = pd.concat(splits[:3])
    assert balanced["Label"].value_counts().tolist() == [100, 100, 100]
    # The test set topped up with left-out rows to the collection's shares, 6 : 3 : 1.
    realistic = splits.test_realistic["Label"].value_counts().sort_index()
    c = realistic[2]
    assert realistic.tolist() == [6 * c, 3 * c, c]
    assert not splits.test_realistic["Text"].isin(splits.train["Text"]).any()


def test_a_class_too_small_for_training_is_named() -> None:
    df = pd.concat([frame({"a": 50, "b": 50}), frame({"rare": 1})], ignore_index=True)
    with pytest.raises(DataError, match="class 'rare' has 1 row, too few"):
        split_labelled_texts(df, ("a", "b", "rare"))


def test_multiclass_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    probabilities = rng.dirichlet(np.ones(4), size=200)
    probabilities[np.arange(200), labels] += 0.3  # better than chance
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)

    m = multiclass_metrics(labels, probabilities, ["w", "x", "y", "z"])

    assert m.accuracy == pytest.approx(sklearn.metrics.accuracy_score(labels, predicted))
    assert m.f1 == pytest.approx(sklearn.metrics.f1_score(labels, predicted, average="macro"))
    assert m.micro_f1 == pytest.approx(m.accuracy)
    assert m.roc_auc == pytest.approx(
        sklearn.metrics.roc_auc_score(labels, probabilities, multi_class="ovr")
    )
    assert m.confusion_matrix == sklearn.metrics.confusion_matrix(labels, predicted).tolist()
    assert m.per_class["y"]["recall"] == pytest.approx(
        sklearn.metrics.recall_score(labels, predicted, average=None)[2]
    )


# --- End to end -----------------------------------------------------------------------------


def test_three_classes_split_train_evaluate_classify(
    tmp_path: Path, monkeypatch, capsys, tiny_models
) -> None:
    monkeypatch.chdir(tmp_path)
    csv_path = write_tickets(tmp_path / "tickets.csv", {"billing": 90, "shipping": 60, "login": 30})
    data = ["--data-dir", "tickets"]
    split = ["split", "--csv", str(csv_path), "--text-column", "body", "--label-column", "team"]
    assert main([*split, *data]) == 0
    out = capsys.readouterr().out
    assert "Collection: 180 texts (90 billing, 30 login, 60 shipping)" in out
    report = json.loads((tmp_path / "tickets" / SPLIT_REPORT).read_text())
    assert report["id2label"] == {"0": "billing", "1": "login", "2": "shipping"}
    assert [report["splits"][s]["rows"] for s in ("train", "validation", "test")] == [126, 18, 36]
    assert not (tmp_path / "tickets" / SPLIT_FILES["test_realistic"]).exists()

    train = ["train", *data, "--weights", "random", "--run-dir", "run", "--epochs", "3"]
    assert main([*train, "--lr", "1e-3", "--context-length", "6"]) == 0
    out = capsys.readouterr().out
    assert "Classes: 3 (billing, login, shipping)" in out
    assert "training / " in out and "messages longer than 6 tokens to their first 6" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["id2label"] == report["id2label"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["id2label"] == report["id2label"]
    assert set(metrics["metrics"]["test"]["per_class"]) == {"billing", "login", "shipping"}
    assert metrics["accuracy"]["test"] > 0.8  # disjoint vocabularies are learnt

    assert main(["evaluate", *data, "--run-dir", "run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Evaluating run/ (classes: billing, login, shipping)"
    assert "macro F1" in out and "shipping: recall" in out
    assert "true \\ predicted  billing  login  shipping" in out
    evaluation = json.loads((tmp_path / "run" / "evaluation-tickets.json").read_text())
    test = evaluation["sets"]["test"]
    assert np.array(test["confusion_matrix"]).shape == (3, 3)
    assert sum(map(sum, test["confusion_matrix"])) == 36
    assert {"micro_f1", "roc_auc", "per_class"} <= set(test)
    assert "realistic" not in evaluation["sets"]
    assert (tmp_path / "run" / "confusion_matrix-tickets.png").is_file()

    texts = ["refund the payment on my card", "parcel tracking says delivery late"]
    assert main(["classify", "--run-dir", "run", "--json", *texts]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in results] == ["billing", "shipping"]
    assert all(1 / 3 < r["probability"] <= 1 for r in results)  # the label's own

    assert main(["classify", "--run-dir", "run", "--threshold", "0.9", texts[0]]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "--threshold 0.9: a threshold is for two classes, and this classifier has 3" in error


def test_the_sms_collection_through_the_csv_path_splits_the_same(
    shared_data: Path, tmp_path: Path
) -> None:
    """The SMS file with a header line, read as your own TSV with the SMS path's settings
    (undersampled, one shuffle for everything), gives the same files, byte for byte."""
    tsv = tmp_path / "sms.tsv"
    tsv.write_bytes(b"label\ttext\n" + (shared_data / "SMSSpamCollection").read_bytes())
    assert main(["download", "--data-dir", str(tmp_path / "sms"), "--weights", "random",
                 "--sms-source", str(shared_data / "sms_spam_collection.zip")]) == 0  # fmt: skip
    assert main(["split", "--data-dir", str(tmp_path / "sms")]) == 0
    own = ["split", "--tsv", str(tsv), "--data-dir", str(tmp_path / "own")]
    assert main([*own, "--balance", "undersample", "--split-method", "random"]) == 0

    for name in SPLIT_FILES.values():
        assert (tmp_path / "own" / name).read_bytes() == (tmp_path / "sms" / name).read_bytes()
    sms, mine = (json.loads((tmp_path / d / SPLIT_REPORT).read_text()) for d in ("sms", "own"))
    assert mine["splits"] == sms["splits"] and mine["id2label"] == sms["id2label"]
    # and the library's SMS recipe is the same call
    df = read_labelled_texts(tsv, fmt="tsv")
    train = make_splits(df, seed=123).train
    pd.testing.assert_frame_equal(train, read_split(tmp_path / "own" / "train.csv"))


def test_experiment_rows_and_baselines_on_three_classes(tmp_path: Path) -> None:
    from ch06_classification.extras.experiments import BY_NUMBER, run_experiments
    from ch06_classification.sources.split_files import write_splits

    df = read_labelled_texts(
        write_tickets(tmp_path / "t.csv", {"billing": 40, "shipping": 40, "login": 40}),
        "body",
        "team",
    )
    write_splits(df, tmp_path / "data", class_names=class_names_of(df["Label"]),
                 balance="none", method="stratified")  # fmt: skip
    tiny = {"context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 2}

    summaries = run_experiments(
        [BY_NUMBER[16], BY_NUMBER[20], BY_NUMBER[21]],
        tmp_path / "table",
        tmp_path / "data",
        weights="random",
        device="cpu",
        overrides={"epochs": 1, "config_overrides": tiny},
        log=lambda line: None,
    )

    flexible, tfidf, majority = summaries
    assert majority["test"] == pytest.approx(100 / 3, abs=0.01)  # 8 of 24 in each class
    assert tfidf["test"] == 100.0  # the words give the class away
    assert 0 <= flexible["test_f1"] <= 1  # the macro F1 of three classes
    assert (tmp_path / "table" / "table.md").is_file()


def test_a_three_class_export_loads_in_transformers_with_its_names(tmp_path: Path) -> None:
    from transformers import GPT2ForSequenceClassification

    from ch06_classification.classifying.spam_classifier import SpamClassifier
    from ch06_classification.extras.export import export_hf
    from ch06_classification.finetuning.model import build_classifier
    from ch06_classification.storage.checkpoint import ClassifierInfo, save_checkpoint_folder

    names = ("billing", "login", "shipping")
    tiny = {"emb_dim": 32, "n_layers": 2, "n_heads": 4, "context_length": 64}
    model = build_classifier("gpt2-small", weights="random", labels=names, seed=3, **tiny)
    model.out_head.bias.data = torch.tensor([0.5, -1.0, 2.0])  # carried over by the fold
    info = ClassifierInfo(config=model.cfg, max_length=32, labels=names, weights="random")
    save_checkpoint_folder(model, info, tmp_path / "run")
    ours = SpamClassifier.from_pretrained(tmp_path / "run", device="cpu")

    export_hf(ours.model, ours.info, tmp_path / "hf")

    hf_model = GPT2ForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf_model.config.id2label == {0: "billing", 1: "login", 2: "shipping"}
    texts = ["refund the payment on my card", "parcel tracking says delivery late"]
    for text, expected in zip(texts, ours.predict_proba(texts), strict=True):
        with torch.no_grad():
            logits = hf_model(input_ids=torch.tensor([ours.encode(text)])).logits
        np.testing.assert_allclose(torch.softmax(logits, -1)[0].numpy(), expected, atol=1e-5)
    assert ours.predict(texts).tolist() == [names[i] for i in ours.predict_proba(texts).argmax(1)]
