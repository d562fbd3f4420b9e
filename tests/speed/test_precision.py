"""Classifying in bfloat16: the weights cast once, the same labels as float32, and what
``--precision auto`` chooses (with the hardware probe mocked, so that every branch runs
on any machine)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ch06_classification.classifying.spam_classifier import SpamClassifier
from ch06_classification.finetuning.finetune import TrainingSettings, fine_tune
from ch06_classification.sources.split_files import read_split
from ch06_classification.speed import precision
from ch06_classification.speed.precision import (
    CHECK_FILE,
    MIN_TOKENS_FOR_BF16,
    Agreement,
    choose_precision,
    set_classifier_precision,
)
from ch06_classification.storage.runs import save_training_run
from gpt.fast_attention import FastMultiHeadAttention
from gpt.model import MultiHeadAttention
from tests.synthetic_splits import write_synthetic_splits

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

TINY = {"emb_dim": 32, "n_layers": 3, "n_heads": 4, "context_length": 64}
CPU = torch.device("cpu")
ENOUGH = 10 * MIN_TOKENS_FOR_BF16  # tokens: enough work for bfloat16 to be weighed


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A lean run of a tiny random-weights model trained on easy synthetic splits: its
    folder and its data folder."""
    data_dir = write_synthetic_splits(tmp_path_factory.mktemp("data"), sizes=(64, 24, 24))
    settings = TrainingSettings(
        weights="random", data_dir=str(data_dir), epochs=3, lr=2e-3, config_overrides=TINY
    )
    run_dir = tmp_path_factory.mktemp("run")
    save_training_run(fine_tune(settings, log=lambda line: None), run_dir)
    return run_dir, data_dir


@pytest.fixture
def has_bf16_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: "test bfloat16 units")


def validation_texts(data_dir: Path) -> list[str]:
    return read_split(data_dir / "validation.csv")["Text"].tolist()


def test_bfloat16_casts_the_weights_once_and_keeps_float32s_labels(run) -> None:
    run_dir, data_dir = run
    texts = validation_texts(data_dir)
    classifier = SpamClassifier.from_pretrained(run_dir, device="cpu")
    fp32 = classifier.predict_proba(texts)

    classifier.set_precision("bf16")
    bf16 = classifier.predict_proba(texts)

    assert {p.dtype for p in classifier.model.parameters()} == {torch.bfloat16}
    # ... and attention switched to its variant for bfloat16 on a CPU
    # (tests/gpt/test_fast_attention.py)
    assert all(isinstance(b.att, FastMultiHeadAttention) for b in classifier.model.trf_blocks)
    confident = np.abs(fp32[:, 1] - 0.5) > 0.05  # the easy messages: a clear answer
    assert confident.sum() >= len(texts) // 2
    np.testing.assert_array_equal(bf16[confident].argmax(1), fp32[confident].argmax(1))
    np.testing.assert_allclose(bf16, fp32, atol=0.03)
    assert not np.array_equal(bf16, fp32)  # it did compute in bfloat16

    classifier.set_precision("fp32")  # back to the very float32 weights
    assert {p.dtype for p in classifier.model.parameters()} == {torch.float32}
    np.testing.assert_array_equal(classifier.predict_proba(texts), fp32)


def test_save_pretrained_of_a_bfloat16_classifier_keeps_the_float32_weights(
    run, tmp_path: Path
) -> None:
    run_dir, data_dir = run
    texts = validation_texts(data_dir)
    classifier = SpamClassifier.from_pretrained(run_dir, device="cpu", precision="bf16")

    classifier.save_pretrained(tmp_path / "copy")

    assert classifier.precision == "bf16"
    reference = SpamClassifier.from_pretrained(run_dir, device="cpu")
    copy = SpamClassifier.from_pretrained(tmp_path / "copy", device="cpu")
    np.testing.assert_array_equal(copy.predict_proba(texts), reference.predict_proba(texts))


def test_auto_takes_bfloat16_when_the_labels_agree_and_remembers_the_check(
    tmp_path: Path, has_bf16_units: None
) -> None:
    checks = []

    def check() -> Agreement:
        checks.append(1)
        return Agreement(messages=149, disagreements=0, max_difference=0.004)

    choice = choose_precision("auto", CPU, ENOUGH, tmp_path, check)
    again = choose_precision("auto", CPU, ENOUGH, tmp_path, check)

    assert (choice.precision, again.precision) == ("bf16", "bf16")
    assert "test bfloat16 units" in choice.reason and "149 validation messages" in choice.reason
    assert len(checks) == 1  # the second choice read the run folder
    recorded = json.loads((tmp_path / CHECK_FILE).read_text())
    assert recorded == {"cpu": {"messages": 149, "disagreements": 0, "max_difference": 0.004}}


def test_auto_falls_back_to_float32_when_a_label_differs(
    tmp_path: Path, has_bf16_units: None
) -> None:
    choice = choose_precision(
        "auto", CPU, ENOUGH, tmp_path, lambda: Agreement(149, 2, max_difference=0.3)
    )

    assert choice.precision == "fp32"
    assert "changes the label of 2 of the run's 149 validation messages" in choice.reason


def never(*args: object) -> None:
    raise AssertionError("the check must not run")


@pytest.mark.parametrize(
    ("units", "tokens", "reason"),
    [
        (None, ENOUGH, "no native bfloat16 matrix units on this cpu"),
        ("test units", MIN_TOKENS_FOR_BF16 - 1, "too few for casting the weights"),
    ],
)
def test_auto_stays_in_float32_without_units_or_work_and_never_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, units: str | None, tokens: int, reason: str
) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: units)

    choice = choose_precision("auto", CPU, tokens, tmp_path, never)

    assert choice.precision == "fp32" and reason in choice.reason
    assert not (tmp_path / CHECK_FILE).exists()


def test_auto_without_a_validation_split_stays_in_float32_and_remembers_nothing(
    tmp_path: Path, has_bf16_units: None
) -> None:
    choice = choose_precision("auto", CPU, ENOUGH, tmp_path, lambda: None)

    assert choice.precision == "fp32" and "validation split was not found" in choice.reason
    assert not (tmp_path / CHECK_FILE).exists()


def test_an_explicit_precision_is_taken_as_asked(tmp_path: Path) -> None:
    for asked in ("fp32", "bf16"):
        assert choose_precision(asked, CPU, 1, tmp_path, never).precision == asked


def test_auto_checks_on_the_runs_own_validation_split(
    run, tmp_path: Path, has_bf16_units: None
) -> None:
    run_dir, data_dir = run
    (run_dir / CHECK_FILE).unlink(missing_ok=True)
    classifier = SpamClassifier.from_pretrained(run_dir, device="cpu")
    texts = validation_texts(data_dir)
    fp32 = classifier.predict_proba(texts)
    classifier.set_precision("bf16")
    expected = int((classifier.predict_proba(texts).argmax(1) != fp32.argmax(1)).sum())
    classifier.set_precision("fp32")
    logged = []

    choice = set_classifier_precision(classifier, "auto", ENOUGH, run_dir, log=logged.append)

    recorded = json.loads((run_dir / CHECK_FILE).read_text())["cpu"]
    assert recorded["messages"] == len(texts) and recorded["disagreements"] == expected
    assert choice.precision == ("fp32" if expected else "bf16") == classifier.precision
    assert logged == [
        f"checking bfloat16 against float32 on the run's {len(texts)} validation messages "
        "(once for this run and device) ..."
    ]


# --- Training: --precision auto, the default of train and of every experiment row ---------


@pytest.fixture
def has_no_bf16_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: None)


def train_tiny(data_dir: Path, **settings: object) -> tuple[TrainingSettings, list[str]]:
    """Train a tiny model one epoch; the settings it recorded, and what it logged."""
    logged: list[str] = []
    result = fine_tune(
        TrainingSettings(
            weights="random", data_dir=str(data_dir), epochs=1, config_overrides=TINY, **settings
        ),
        log=logged.append,
        progress=False,
    )
    return TrainingSettings(**result.info.extra["settings"]), logged


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_splits(tmp_path_factory.mktemp("data"), sizes=(16, 8, 8))


def test_training_defaults_to_auto() -> None:
    assert TrainingSettings().precision == "auto"


def test_auto_trains_in_float32_without_native_bfloat16_units(
    tiny_data: Path, has_no_bf16_units: None
) -> None:
    recorded, logged = train_tiny(tiny_data)
    assert recorded.precision == "fp32"  # the run records what it trained in, not "auto"
    assert (
        "Precision: float32 (--precision auto: no native bfloat16 matrix units on this cpu, "
        "where bfloat16 would be emulated and slower)"
    ) in logged


def test_auto_trains_in_bfloat16_with_native_units(tiny_data: Path, has_bf16_units: None) -> None:
    recorded, logged = train_tiny(tiny_data)
    assert recorded.precision == "bf16"
    assert "Precision: bfloat16 (--precision auto: test bfloat16 units)" in logged


def test_bfloat16_asked_for_where_it_is_emulated_says_it_is_slower(
    tiny_data: Path, has_no_bf16_units: None
) -> None:
    recorded, logged = train_tiny(tiny_data, precision="bf16")
    assert recorded.precision == "bf16"  # as asked
    [line] = [line for line in logged if line.startswith("Precision:")]
    assert line.startswith("Precision: bfloat16 (as asked with --precision, but this cpu has no")
    assert "emulates bfloat16, so training runs slower than in float32" in line


@pytest.mark.parametrize("units", [None, "test bfloat16 units"])
def test_an_explicit_training_precision_is_taken_as_asked(
    monkeypatch: pytest.MonkeyPatch, units: str | None
) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: units)
    for asked in ("fp32", "bf16"):
        choice = precision.training_precision(asked, CPU)
        assert choice.precision == asked
        assert ("slower" in choice.reason) == (asked == "bf16" and units is None)


def test_training_in_bfloat16_uses_the_fast_attention(tmp_path: Path) -> None:
    data_dir = write_synthetic_splits(tmp_path / "data", sizes=(16, 8, 8))
    settings = TrainingSettings(
        weights="random", data_dir=str(data_dir), epochs=1, config_overrides=TINY
    )
    for asked, attention in (("fp32", MultiHeadAttention), ("bf16", FastMultiHeadAttention)):
        result = fine_tune(replace(settings, precision=asked), log=lambda line: None)
        assert {type(block.att) for block in result.model.trf_blocks} == {attention}
