"""The README's examples are true: its Python session runs, and shows what it says it shows.

The README shows two sessions with the run that its offline pipeline makes (``make
pipeline ARGS="--sms-source ... --weights random"``): one in a terminal, one in Python. The
Python session is run here, example by example, on a small run of the SMS classes:

- every call works as shown, and every output that holds for any run of the SMS data (the
  classes, the files written) is the one shown, as doctest compares them;
- the outputs marked as "the offline run's" answers depend on that run's weights: each is
  held to what the terminal session shows for the same messages (its labels, and its
  probabilities to the three decimals printed there), and the small run's answer must
  have its form (type, shape, dtype).
"""

from __future__ import annotations

import copy
import doctest
import re
from pathlib import Path

import numpy as np

from ch06_classification.classifying.spam_classifier import SpamClassifier
from tests.tiny_classifier import write_tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_RUN = "runs/20261125-101500"  # the run folder the README's session names
MARK = "the offline run's answer"  # an output that depends on the run's trained weights


def section(title: str) -> str:
    """The README's text under ``## title``, up to the next section."""
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_block(text: str, language: str) -> str:
    return text.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def terminal_answers() -> dict[str, tuple[str, float]]:
    """The terminal session's answers, by the start of the message it shows: (label, spam
    probability)."""
    answers = {}
    for line in code_block(section("Classifying from a terminal"), "console").splitlines():
        match = re.fullmatch(r"(ham|spam) +([01]\.\d{3})  (.*?)(?:\.\.\.)?", line)
        if match:
            answers[match[3]] = (match[1], float(match[2]))
    return answers


def as_value(text: str):
    """A shown output as a value: ``array([...], dtype=float32)``, a list of dicts ...;
    digits left out with "..." count as none."""
    namespace = {"array": np.array, "PosixPath": Path}
    return eval(re.sub(r"(\d)\.\.\.", r"\1", text), namespace)


def same(got, shown, tolerance: float) -> bool:
    """``got`` is ``shown``: the same structure, equal strings, numbers within ``tolerance``."""
    if isinstance(shown, np.ndarray):
        return (
            isinstance(got, np.ndarray)
            and got.dtype == shown.dtype
            and same(got.tolist(), shown.tolist(), tolerance)
        )
    if isinstance(shown, list):
        return (
            isinstance(got, list)
            and len(got) == len(shown)
            and all(same(g, s, tolerance) for g, s in zip(got, shown, strict=True))
        )
    if isinstance(shown, dict):
        return (
            isinstance(got, dict)
            and got.keys() == shown.keys()
            and all(same(got[key], shown[key], tolerance) for key in shown)
        )
    if isinstance(shown, float):
        return isinstance(got, float) and abs(got - shown) <= tolerance
    return got == shown


def same_form(got, shown) -> bool:
    """What any run would answer in place of ``shown``: the same type, shape and dtype."""
    if isinstance(shown, np.ndarray):
        return isinstance(got, np.ndarray) and (got.shape, got.dtype) == (shown.shape, shown.dtype)
    if isinstance(shown, list):
        return (
            isinstance(got, list)
            and len(got) == len(shown)
            and all(
                isinstance(g, dict) and g.keys() == s.keys()
                for g, s in zip(got, shown, strict=True)
            )
        )
    return type(got) is type(shown)


def answering_as_the_terminal_session(classifier: SpamClassifier) -> SpamClassifier:
    """``classifier`` with the terminal session's probabilities for its messages."""
    answers = terminal_answers()

    def predict_proba(texts):
        texts = [texts] if isinstance(texts, str) else texts
        spam = [next(p for start, (_, p) in answers.items() if t.startswith(start)) for t in texts]
        return np.array([[1 - p, p] for p in spam])

    stand_in = copy.copy(classifier)
    stand_in.predict_proba = predict_proba
    return stand_in


def evaluate(source: str, namespace: dict):
    """Run one example; its value, as the interactive prompt would show it (None: nothing)."""
    try:
        code = compile(source, "README.md", "eval")
    except SyntaxError:  # a statement
        exec(compile(source, "README.md", "exec"), namespace)
        return None
    return eval(code, namespace)


def test_the_python_session_runs_and_shows_what_it_says(tmp_path: Path, monkeypatch) -> None:
    block = code_block(section("From Python"), "pycon")
    examples = doctest.DocTestParser().get_examples(block)
    assert README_RUN in block and sum(MARK in e.source for e in examples) >= 3
    write_tiny_checkpoint(tmp_path / "run")  # a small run of the SMS classes, ham and spam
    monkeypatch.chdir(tmp_path)  # save_pretrained writes here
    namespace: dict = {}
    checker = doctest.OutputChecker()
    for example in examples:
        source = example.source.replace(README_RUN, str(tmp_path / "run"))
        value = evaluate(source, namespace)
        got = "" if value is None else repr(value) + "\n"
        if MARK not in example.source:  # true of any run: exactly as shown
            flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
            assert checker.check_output(example.want, got, flags), (example.source, got)
            continue
        shown = as_value(example.want)
        assert same_form(value, shown), (example.source, got)
        # The terminal session's run answers what the README shows, to its 3 decimals.
        terminal = dict(
            namespace, classifier=answering_as_the_terminal_session(namespace["classifier"])
        )
        assert same(evaluate(source, terminal), shown, tolerance=5e-4), example.source
    assert (tmp_path / "spam-model" / "model.safetensors").is_file()


def test_the_terminal_session_answers_the_python_sessions_messages() -> None:
    """The two sessions are one run's: every message of the Python session is answered in
    the terminal session, and the checks above compare the two."""
    answers = terminal_answers()
    messages = re.findall(r'\.\.\.     "(.*)",', code_block(section("From Python"), "pycon"))
    assert len(messages) == 2
    for message in messages:
        assert any(message.startswith(start) for start in answers), message


def test_the_offline_routes_commands_start_from_random_weights() -> None:
    """Every command shown for the offline route, and those of the tickets example (whose
    output was made offline), says --weights random: without it, training downloads
    OpenAI's weights."""
    own_data = (ROOT / "docs" / "own-data.md").read_text(encoding="utf-8")
    tickets = own_data.split("runs the same steps in one go")[0]
    commands = code_block(tickets, "bash").splitlines()
    commands += re.findall(r"`(gpt-spam [^`]+)`", " ".join(tickets.split()))  # inline ones
    trained = [line for line in commands if re.match(r"gpt-spam (train|pipeline)", line)]
    offline = [
        line
        for line in README.splitlines()
        if re.search(r"(make pipeline|gpt-spam (pipeline|train)) .*--sms-source", line)
    ]
    assert offline and len(trained) >= 2
    for line in offline + trained:
        assert "--weights random" in line, line
