"""Why a message got its label: each token's weight is how much the label's probability
falls when the token is left out, and `classify --explain` shows the strongest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ch06_classification.classifying.answers import answers
from ch06_classification.classifying.explain import (
    STRONGEST,
    explanation,
    left_out,
    predict_with_left_out,
    token_spans,
)
from ch06_classification.classifying.spam_classifier import SpamClassifier
from ch06_classification.cli.main import main
from tests.tiny_classifier import MAX_LENGTH, MESSAGES, write_tiny_checkpoint

EMOJI_TEXT = "héllo 😀 <b>WIN</b>"


@pytest.fixture(scope="module")
def classifier(checkpoint: Path) -> SpamClassifier:
    return SpamClassifier.from_pretrained(checkpoint, device="cpu")


def test_each_weight_is_the_fall_of_the_labels_probability_without_that_token(
    classifier: SpamClassifier,
) -> None:
    texts = [*MESSAGES, EMOJI_TEXT]
    encoded = [classifier.encode(text) for text in texts]
    probabilities, variants = predict_with_left_out(classifier, encoded, [True] * len(texts))
    results = answers(classifier, texts, probabilities, 0.5, encoded, variants)

    for ids, result in zip(encoded, results, strict=True):
        column = classifier.labels.index(result["label"])
        # Independently: the message, then each token left out, each classified alone.
        whole = classifier.predict_proba_encoded([ids])[0, column]
        # (A one-token message without its token is the end-of-text token alone.)
        pad = classifier.info.pad_token_id
        without = [
            classifier.predict_proba_encoded([ids[:i] + ids[i + 1 :] or [pad]])[0, column]
            for i in range(len(ids))
        ]
        weights = [token["weight"] for token in result["explanation"]["tokens"]]
        # Classified alone or batched with others of other lengths: equal to rounding.
        np.testing.assert_allclose(weights, whole - np.array(without), atol=1e-6)
        assert result["explanation"]["label"] == result["label"]


def test_the_messages_probabilities_are_those_of_classifying_them_alone(
    classifier: SpamClassifier,
) -> None:
    encoded = [classifier.encode(text) for text in MESSAGES]
    explained = [i % 2 == 0 for i in range(len(MESSAGES))]

    probabilities, variants = predict_with_left_out(classifier, encoded, explained)

    # Batched with the variants or alone: equal to rounding.
    np.testing.assert_allclose(probabilities, classifier.predict_proba_encoded(encoded), atol=1e-6)
    for ids, wanted, rows in zip(encoded, explained, variants, strict=True):
        assert (rows is not None) == wanted
        if wanted:
            assert rows.shape == (len(ids), len(classifier.labels))


def test_left_out_leaves_out_each_token_once_and_a_lone_token_leaves_the_pad() -> None:
    assert left_out([5, 6, 7], pad_token_id=0) == [[6, 7], [5, 7], [5, 6]]
    assert left_out([5], pad_token_id=50256) == [[50256]]


def test_the_tokens_spell_the_text_read(classifier: SpamClassifier) -> None:
    text, spans = token_spans(classifier.tokenizer, classifier.encode(EMOJI_TEXT))

    assert text == EMOJI_TEXT
    assert "".join(text[start:end] for start, end in spans) == EMOJI_TEXT
    assert spans == sorted(spans) and all(start <= end for start, end in spans)
    # The emoji's 4 bytes are split over two tokens: it belongs to the one completing it.
    assert [text[start:end] for start, end in spans].count("😀") == 1


def test_a_long_message_is_explained_on_the_tokens_read(classifier: SpamClassifier) -> None:
    long_text = "Congratulations! " * 40
    ids = classifier.encode(long_text)
    probabilities, [rows] = predict_with_left_out(classifier, [ids], [True])
    [label] = classifier.labels_of(probabilities)

    tokens = explanation(classifier, ids, probabilities[0], rows, label)["tokens"]

    assert len(tokens) == MAX_LENGTH
    assert long_text.startswith("".join(token["text"] for token in tokens))


def test_strongest_are_the_largest_weights_either_way_and_never_a_zero(
    classifier: SpamClassifier,
) -> None:
    ids = classifier.encode("one two three four five six seven eight")  # 8 tokens
    probabilities = np.array([0.2, 0.8])
    falls = [0.1, -0.3, 0.0, 0.05, 0.3, -0.01, 0.02, 0.0]  # of spam's 0.8, token by token
    rows = np.array([[0.2 + fall, 0.8 - fall] for fall in falls])

    spam = explanation(classifier, ids, probabilities, rows, "spam")
    ham = explanation(classifier, ids, probabilities, rows, "ham")

    np.testing.assert_allclose([t["weight"] for t in spam["tokens"]], falls, atol=1e-12)
    assert spam["strongest"] == [1, 4, 0, 3, 6]  # by size, ties in message order
    assert len(spam["strongest"]) == STRONGEST
    # Towards the other of two classes, every weight is the opposite.
    np.testing.assert_allclose(
        [t["weight"] for t in ham["tokens"]], [-f for f in falls], atol=1e-12
    )
    unmoved = explanation(classifier, ids[:2], probabilities, np.array([[0.2, 0.8]] * 2), "spam")
    assert unmoved["strongest"] == []


def test_a_classifier_of_three_classes_explains_its_most_probable_class(tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path, labels=("news", "sport", "tech"))
    classifier = SpamClassifier.from_pretrained(checkpoint, device="cpu")
    encoded = [classifier.encode(text) for text in MESSAGES]
    probabilities, variants = predict_with_left_out(classifier, encoded, [True] * len(MESSAGES))

    results = answers(classifier, list(MESSAGES), probabilities, None, encoded, variants)

    for row, rows, result in zip(probabilities, variants, results, strict=True):
        column = int(row.argmax())
        assert result["label"] == classifier.labels[column] == result["explanation"]["label"]
        weights = [token["weight"] for token in result["explanation"]["tokens"]]
        np.testing.assert_allclose(weights, row[column] - rows[:, column], atol=1e-12)


# --- classify --explain ---------------------------------------------------------------------


def test_classify_explain_names_the_strongest_tokens(checkpoint: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    texts = ["WINNER! Claim your free prize now", "ok"]

    status = main(
        ["classify", "--device", "cpu", "--run-dir", str(checkpoint), "--explain", *texts]
    )
    lines = capsys.readouterr().out.splitlines()
    json_status = main(
        ["classify", "--device", "cpu", "--run-dir", str(checkpoint), "--explain", "--json", *texts]
    )
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert status == json_status == 0
    assert len(lines) == 4  # each answer, then why
    for line, why, result in zip(lines[::2], lines[1::2], printed, strict=True):
        assert line.startswith(result["label"])
        tokens = result["explanation"]["tokens"]
        named = [
            f"{tokens[i]['text']!r} {tokens[i]['weight']:+.3f}"
            for i in result["explanation"]["strongest"]
        ]
        assert why.strip() == "why: " + ", ".join(named)


def test_classify_without_explain_prints_no_explanation(checkpoint: Path, capsys) -> None:
    main(["classify", "--device", "cpu", "--run-dir", str(checkpoint), "--json", "hello there"])

    [result] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert set(result) == {"text", "label", "spam_probability"}
