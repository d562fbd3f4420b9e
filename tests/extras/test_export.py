"""``gpt-spam export``: transformers' GPT2ForSequenceClassification loads the exported folder
and gives the same spam probabilities; what cannot be exported faithfully is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ch06_classification.classifying.spam_classifier import SpamClassifier
from ch06_classification.cli.main import main
from ch06_classification.finetuning.model import build_classifier
from ch06_classification.storage.checkpoint import (
    ClassifierInfo,
    load_classifier,
    save_checkpoint_folder,
)
from tests.tiny_classifier import MESSAGES

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

TINY = {"emb_dim": 32, "n_layers": 2, "n_heads": 4, "context_length": 64}
MAX_LENGTH = 48


def write_run(folder: Path, token_position: str = "flexible") -> Path:
    """A tiny run whose every tensor, and the head's bias above all, is far from zero."""
    model = build_classifier("gpt2-small", weights="random", seed=7, **TINY)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
        model.out_head.bias.copy_(torch.tensor([1.5, -2.0]))  # only the fold carries it over
    info = ClassifierInfo(
        config=model.cfg, max_length=MAX_LENGTH, token_position=token_position, weights="random"
    )
    return save_checkpoint_folder(model, info, folder)


def hf_probabilities(hf_model, encoded: list[list[int]], pad: int = 50256) -> np.ndarray:
    """transformers' probabilities for right-padded batches of token ids."""
    rows = []
    for start in range(0, len(encoded), 64):
        batch = encoded[start : start + 64]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), pad)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        with torch.no_grad():
            logits = hf_model(input_ids=ids, attention_mask=mask).logits
        rows.append(torch.softmax(logits.double(), dim=-1).numpy())
    return np.concatenate(rows)


@pytest.fixture(scope="module")
def test_split(real_splits: Path) -> list[str]:
    """The messages of the real test split (300), as `gpt-spam split` makes it."""
    from ch06_classification.sources.split_files import read_split

    return read_split(real_splits / "test.csv")["Text"].tolist()


def test_transformers_gives_the_same_probabilities_on_the_test_split(
    tmp_path: Path, test_split: list[str]
) -> None:
    from transformers import GPT2ForSequenceClassification

    run = write_run(tmp_path / "run")
    assert (
        main(["export", "--run-dir", str(run), "--format", "hf", "--out", str(tmp_path / "hf")])
        == 0
    )

    hf_model = GPT2ForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    ours = SpamClassifier.from_pretrained(run, device="cpu")
    encoded = [ours.encode(text) for text in test_split]  # cut to max_length, as ours reads

    expected = ours.predict_proba(test_split)
    got = hf_probabilities(hf_model, encoded)

    assert len(test_split) == 300
    assert hf_model.config.id2label == {0: "ham", 1: "spam"}
    assert np.abs(got - expected).max() < 1e-4
    assert expected[:, 1].std() > 0.01  # the messages really get different answers


def test_a_transformers_pipeline_reads_the_folder_alone_and_agrees(
    tmp_path: Path, test_split: list[str]
) -> None:
    """The exported folder is all transformers needs, tokenizer included, offline."""
    from transformers import pipeline

    run = write_run(tmp_path / "run")
    main(["export", "--run-dir", str(run), "--format", "hf", "--out", str(tmp_path / "hf")])
    classify = pipeline("text-classification", model=str(tmp_path / "hf"), device="cpu")
    ours = SpamClassifier.from_pretrained(run, device="cpu")

    texts = test_split[:100]  # (a fraction of it: the check above covers them all)
    for text in texts:  # the same tokens, cut at the same place
        assert classify.tokenizer(text, truncation=True)["input_ids"] == ours.encode(text)
    results = classify(texts, truncation=True, top_k=None)
    got = np.array([{r["label"]: r["score"] for r in result}["spam"] for result in results])

    assert np.abs(got - ours.predict_proba(texts)[:, 1]).max() < 1e-4


def test_the_logits_are_the_same_because_the_head_bias_is_folded(tmp_path: Path) -> None:
    from transformers import GPT2ForSequenceClassification

    run = write_run(tmp_path / "run")
    main(["export", "--run-dir", str(run), "--format", "hf", "--out", str(tmp_path / "hf")])
    hf_model = GPT2ForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    model, _ = load_classifier(run)
    ours = SpamClassifier(model, load_classifier(run)[1])

    for text in MESSAGES:
        ids = torch.tensor([ours.encode(text)])
        with torch.no_grad():
            expected = model(ids)[0, -1]
            got = hf_model(input_ids=ids).logits[0]
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["gpt_spam"]["max_length"] == MAX_LENGTH
    assert config["label2id"] == {"ham": 0, "spam": 1}


@pytest.mark.parametrize("token_position", ["last", "first"])
def test_a_model_transformers_would_read_differently_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, token_position: str
) -> None:
    run = write_run(tmp_path / "run", token_position)

    status = main(
        ["export", "--run-dir", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]
    )

    err = capsys.readouterr().err.splitlines()
    assert (status, len(err)) == (1, 1)
    assert f"classifies the '{token_position}' token" in err[0]
    assert "--token-position flexible" in err[0]
    assert not (tmp_path / "hf" / "model.safetensors").exists()


def test_the_help_says_what_cannot_be_exported(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--token-position last" in help_text and "refused" in help_text


def test_a_full_export_is_self_contained(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    out = tmp_path / "full"

    assert main(["export", "--run-dir", str(run), "--format", "full", "--out", str(out)]) == 0

    exported = SpamClassifier.from_pretrained(out, device="cpu")
    original = SpamClassifier.from_pretrained(run, device="cpu")
    assert exported.info.stored == "full"
    np.testing.assert_array_equal(
        exported.predict_proba(list(MESSAGES)), original.predict_proba(list(MESSAGES))
    )
