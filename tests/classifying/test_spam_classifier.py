"""Section 6.8 from Python: the book's ``classify_review`` and ``SpamClassifier``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ch06_classification.classifying.spam_classifier import EmptyMessageError, SpamClassifier
from ch06_classification.inference import classify_review
from gpt.errors import UserFacingError
from tests.tiny_classifier import MAX_LENGTH, MESSAGES, TINY, write_tiny_checkpoint

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

LONG_MESSAGE = "Congratulations! " * 200  # far longer than the context, 32 tokens


@pytest.fixture(scope="module")
def classifier(checkpoint: Path) -> SpamClassifier:
    return SpamClassifier.from_checkpoint(checkpoint, device="cpu", batch_size=3)


@pytest.mark.parametrize("token_position", ["flexible", "last"])
def test_batched_and_one_by_one_probabilities_agree(tmp_path: Path, token_position: str) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path, token_position=token_position)
    classifier = SpamClassifier.from_checkpoint(checkpoint, device="cpu", batch_size=3)

    batched = classifier.predict_proba(list(MESSAGES))
    one_by_one = np.concatenate([classifier.predict_proba(text) for text in MESSAGES])

    assert batched.shape == (len(MESSAGES), 2)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-6)
    assert len(np.unique(batched[:, 1].round(4))) == len(MESSAGES)  # really different messages


def test_scikit_learn_shapes_one_string_gives_one_row_and_a_list_an_array(
    classifier: SpamClassifier,
) -> None:
    assert classifier.classes_.tolist() == ["ham", "spam"]
    assert classifier.predict_proba(MESSAGES[0]).shape == (1, 2)  # always 2-D
    assert classifier.predict_proba([]).shape == (0, 2)
    assert classifier.predict(MESSAGES[0]) in ("ham", "spam")
    labels = classifier.predict(list(MESSAGES))
    assert isinstance(labels, np.ndarray) and labels.shape == (len(MESSAGES),)
    assert labels[0] == classifier.predict(MESSAGES[0])
    # predict is the column of predict_proba with the highest probability, named by classes_
    best = classifier.classes_[classifier.predict_proba(list(MESSAGES)).argmax(axis=1)]
    assert labels.tolist() == best.tolist()
    assert classifier.predict([]).shape == (0,)


def test_calling_the_classifier_is_a_pipeline_of_label_and_score(
    classifier: SpamClassifier,
) -> None:
    probabilities = classifier.predict_proba(list(MESSAGES))
    results = classifier(list(MESSAGES))

    assert [set(result) for result in results] == [{"label", "score"}] * len(MESSAGES)
    for result, row in zip(results, probabilities, strict=True):
        column = classifier.classes_.tolist().index(result["label"])
        assert result["score"] == pytest.approx(row[column]) == pytest.approx(row.max())
    # One string gives a list of one, like transformers. It is classified alone, not in the
    # batch above: another matrix shape, so another kernel, so the score agrees only to
    # rounding (1e-7 apart on an AVX2 CPU), not bit for bit.
    (alone,) = classifier(MESSAGES[0])
    assert alone["label"] == results[0]["label"]
    assert alone["score"] == pytest.approx(results[0]["score"], abs=1e-5)


def test_predict_is_predict_proba_at_the_threshold(classifier: SpamClassifier) -> None:
    spam_probabilities = classifier.predict_proba(list(MESSAGES))[:, 1]
    threshold = float(np.median(spam_probabilities))  # exactly one message's probability

    labels = classifier.predict(list(MESSAGES), threshold=threshold)

    assert labels.tolist() == ["spam" if p >= threshold else "ham" for p in spam_probabilities]
    assert set(labels) == {"spam", "ham"}
    assert labels[int(np.argmin(np.abs(spam_probabilities - threshold)))] == "spam"  # p == t


def test_classify_review_agrees_with_the_classifier(classifier: SpamClassifier) -> None:
    labels = [
        classify_review(
            text,
            classifier.model,
            classifier.tokenizer,
            "cpu",
            MAX_LENGTH,
            token_position=classifier.info.token_position,
        )
        for text in MESSAGES
    ]

    # The book's function names ham "not spam"; the classifier uses the data's names.
    book_names = {"ham": "not spam", "spam": "spam"}
    assert labels == [book_names[label] for label in classifier.predict(list(MESSAGES))]


def test_the_flexible_answer_does_not_depend_on_padding(classifier: SpamClassifier) -> None:
    def answers(text: str, token_position: str) -> set[str]:
        """``classify_review`` with no padding, some, and up to the whole context."""
        length = len(classifier.encode(text))
        return {
            classify_review(
                text,
                classifier.model,
                classifier.tokenizer,
                "cpu",
                max_length,
                50256,
                token_position,
            )
            for max_length in (length, length + 5, None)
        }

    short = [text for text in MESSAGES if len(classifier.encode(text)) < MAX_LENGTH]
    assert all(len(answers(text, "flexible")) == 1 for text in short)
    # The book's reading of the last padded position does change with the padding here,
    # which shows the model is sensitive enough for the assertion above to mean something.
    assert any(len(answers(text, "last")) == 2 for text in short)


def test_a_long_message_is_cut_to_max_length(classifier: SpamClassifier) -> None:
    assert len(classifier.encode(LONG_MESSAGE)) == MAX_LENGTH == classifier.max_tokens
    # What follows the first max_length tokens is never read.
    np.testing.assert_allclose(
        classifier.predict_proba(LONG_MESSAGE),
        classifier.predict_proba(LONG_MESSAGE + " Call 0800 now to claim"),
        atol=1e-6,
    )
    label = classify_review(LONG_MESSAGE, classifier.model, classifier.tokenizer, "cpu")
    assert label in ("ham", "spam")  # cut to the model's context: no crash


def test_a_max_length_beyond_the_context_is_cut_to_the_context(tmp_path: Path) -> None:
    # A run trained with token_position="last" pads to max_length; the model cannot read
    # more positions than its context, so both are limited to it.
    checkpoint = write_tiny_checkpoint(tmp_path, token_position="last", max_length=100)
    classifier = SpamClassifier.from_checkpoint(checkpoint, device="cpu")

    assert classifier.max_tokens == TINY["context_length"]
    assert classifier.predict_proba([LONG_MESSAGE, "ok"]).shape == (2, 2)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_message_is_refused(classifier: SpamClassifier, text: str) -> None:
    with pytest.raises(EmptyMessageError, match="empty"):
        classifier.predict_proba(["ok", text])
    assert issubclass(EmptyMessageError, UserFacingError)  # one line in the CLI
    assert issubclass(EmptyMessageError, ValueError)  # what Python callers expect


def test_the_books_classify_review_refuses_only_a_message_without_tokens(
    classifier: SpamClassifier,
) -> None:
    # Like the book's, it classifies whatever has tokens, white space too; with none, the
    # last real token would be read at position -1.
    with pytest.raises(ValueError, match="empty"):
        classify_review(
            "", classifier.model, classifier.tokenizer, "cpu", token_position="flexible"
        )
    label = classify_review("   ", classifier.model, classifier.tokenizer, "cpu")
    assert label in ("spam", "not spam")


def test_no_tokens_are_refused_rather_than_read_at_position_minus_one(
    classifier: SpamClassifier,
) -> None:
    with pytest.raises(EmptyMessageError):
        classifier.predict_proba_encoded([[], classifier.encode("ok")])


def test_a_run_folder_and_its_checkpoint_file_load_the_same(checkpoint: Path) -> None:
    from_folder = SpamClassifier.from_checkpoint(checkpoint.parent, device="cpu")
    from_file = SpamClassifier.from_checkpoint(str(checkpoint), device="cpu")

    assert from_folder.info == from_file.info
    assert from_folder.info.max_length == MAX_LENGTH
    assert from_folder.labels == ("ham", "spam")
    np.testing.assert_array_equal(
        from_folder.predict_proba(list(MESSAGES)), from_file.predict_proba(list(MESSAGES))
    )
