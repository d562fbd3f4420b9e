"""Shared test fixtures. Every test is offline: nothing here reaches the network."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.sms_data import real_dataset

ROOT = Path(__file__).resolve().parent.parent

# Small, deterministic CPU work: one thread per test process keeps timings steady.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


def _is_local(host: object) -> bool:
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:  # any other host name
        return False


def _loopback_only_connect(self: socket.socket, address) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        raise ConnectionRefusedError(f"tests must not use the network (tried {address[0]})")
    return _real_connect(self, address)


def _loopback_only_getaddrinfo(host, *args, **kwargs):
    if not _is_local(host):
        raise socket.gaierror(f"tests must not use the network (looked up {host})")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every connection and name lookup that would leave this machine."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only_connect)
    monkeypatch.setattr(socket, "getaddrinfo", _loopback_only_getaddrinfo)


@pytest.fixture(scope="session", autouse=True)
def _local_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """gpt-spam's cache on this machine (digests, random bases) in a folder of the test
    session, for commands run here and in child processes alike: never the user's."""
    from ch06_classification.storage.local_cache import CACHE_DIR_ENV

    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("gpt-spam-cache"))


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of the real SMS Spam Collection: its zip, and the SMSSpamCollection file
    inside it (unzipped beside a copy, if it is not beside the zip); tests using it skip
    without the zip."""
    source = real_dataset()
    folder = source.parent
    if source.name == "sms_spam_collection.zip" and (folder / "SMSSpamCollection").is_file():
        return folder
    folder = tmp_path_factory.mktemp("sms_spam_collection")
    shutil.copyfile(source, folder / "sms_spam_collection.zip")
    with zipfile.ZipFile(source) as archive:
        archive.extract("SMSSpamCollection", folder)
    return folder


@pytest.fixture(scope="session")
def real_splits(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the real collection split as `gpt-spam split` splits it (the book's
    seeds): train, validation, test and realistic CSVs."""
    from ch06_classification.sources.sms import download_sms_spam, load_sms_spam
    from ch06_classification.sources.split_files import write_splits

    folder = tmp_path_factory.mktemp("real_splits")
    download_sms_spam(folder, source=shared_data / "sms_spam_collection.zip", urls=[])
    write_splits(load_sms_spam(folder), folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer():
    from gpt.tokenizer import get_tokenizer

    return get_tokenizer()


@pytest.fixture(scope="session")
def gpt2_small_checkpoint(tmp_path_factory):
    """A transformers GPT-2 of gpt2-small's full shape (random weights), and its weights
    written as OpenAI's released model.safetensors: (hf_model, path)."""
    from gpt.config import get_config
    from tests.checkpoints import hf_gpt2, write_openai_checkpoint

    hf_model = hf_gpt2(get_config("gpt2-small"), seed=1)
    folder = tmp_path_factory.mktemp("gpt2-small")
    return hf_model, write_openai_checkpoint(hf_model, folder / "model.safetensors")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random classifier saved as a run's ``model.safetensors`` (see
    ``tests/tiny_classifier.py``), written once per test module that asks for it."""
    from tests.tiny_classifier import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished run of a tiny model (random base, one epoch), as training leaves it
    (checkpoint, config.json, metrics.json, training_texts.json, ...), and the data folder
    it was trained on: (run_dir, data_dir). Shared: copy the run before changing it."""
    from ch06_classification.finetuning.finetune import TrainingSettings, fine_tune
    from ch06_classification.storage.runs import save_training_run
    from tests.faults import synthetic_data
    from tests.tiny_classifier import TINY

    data_dir = synthetic_data(tmp_path_factory.mktemp("tiny_run_data"))
    settings = TrainingSettings(
        weights="random", data_dir=str(data_dir), epochs=1, config_overrides=TINY
    )
    run_dir = tmp_path_factory.mktemp("tiny_run")
    save_training_run(fine_tune(settings, log=lambda line: None, progress=False), run_dir)
    return run_dir, data_dir


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model that fine-tuning builds is tiny (``TINY_GPT2``, at gpt2-small's context):
    `gpt-spam train` and the pipeline take seconds, not minutes."""
    from ch06_classification.finetuning import finetune
    from tests.tiny_classifier import TINY_GPT2

    build = finetune.build_classifier

    def tiny(*args, **kwargs):
        return build(*args, **{**kwargs, **TINY_GPT2})

    monkeypatch.setattr(finetune, "build_classifier", tiny)


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch):
    """A ``LocalServer`` on 127.0.0.1 (see ``tests/local_server.py``); short download
    timeouts keep a hang bounded."""
    from ch06_classification.sources import sms as download
    from tests.local_server import serving

    monkeypatch.setattr(download, "HTTP_TIMEOUT", (2, 5))
    with serving() as server:
        yield server


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after pytest's own summary
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter):
    """One line at the end: how many tests were skipped, and why (grouped by reason),
    e.g. "24 skipped: set SMS_SPAM_SOURCE to the dataset zip to run them (...)"."""
    result = yield
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr  # (file, line, "Skipped: <reason>") for a skip
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.write_line(
            "; ".join(f"{count} skipped: {reason}" for reason, count in reasons.most_common()),
            yellow=True,
        )
    return result
