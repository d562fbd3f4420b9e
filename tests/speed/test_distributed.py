"""Training on several processes (distributed.py): the same batches, the same gradient,
the same model as one process, one run folder, and a clean stop when one process ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice, pairwise
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from ch06_classification.cli.main import main
from ch06_classification.finetuning import finetune
from ch06_classification.speed.distributed import (
    ShardedBatches,
    World,
    device_for_process,
    share_bounds,
)
from ch06_classification.storage.local_cache import CACHE_DIR_ENV
from gpt.errors import UserFacingError
from tests.run_cli import ROOT
from tests.synthetic_splits import write_synthetic_splits
from tests.tiny_train import TINY_MODEL

# Compares two code paths (with a tolerance where they differ in rounding): also run
# on PyTorch's portable kernels by `make test-portable` (ATEN_CPU_CAPABILITY=default).
pytestmark = pytest.mark.compares_paths

# --- The pieces of the work -----------------------------------------------------------


def test_the_pieces_of_a_batch_cover_it_once_and_differ_by_at_most_one():
    for total in range(0, 12):
        for size in (1, 2, 3, 4):
            bounds = [share_bounds(total, rank, size) for rank in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(end == start for (_, end), (start, _) in pairwise(bounds))
            lengths = [end - start for start, end in bounds]
            assert max(lengths) - min(lengths) <= 1


def shuffled_loader(batch_size: int) -> DataLoader:
    """Like the training loader: shuffled by a seeded generator, last partial batch dropped."""
    generator = torch.Generator().manual_seed(123)
    return DataLoader(
        list(range(23)), batch_size=batch_size, shuffle=True, drop_last=True, generator=generator
    )


def batches_of_two_epochs(loader) -> list[torch.Tensor]:
    """Every batch of two epochs, with a pass over the first two batches after the second
    batch of each, as the book's loop evaluates mid-epoch: that draws from the generator too."""
    seen = []
    for _ in range(2):
        for index, batch in enumerate(loader):
            seen.append(batch)
            if index == 1:
                list(islice(loader, 2))
    return seen


@pytest.mark.parametrize("batch_size", [4, 5])
def test_the_processes_draw_the_one_process_batches_and_split_them(batch_size):
    whole = batches_of_two_epochs(shuffled_loader(batch_size))
    pieces = [
        batches_of_two_epochs(World(rank, 2, distributed=True).shard(shuffled_loader(batch_size)))
        for rank in (0, 1)
    ]
    assert len(whole) == 2 * (23 // batch_size)
    for batch, first, second in zip(whole, *pieces, strict=True):
        assert torch.equal(torch.cat([first, second]), batch)
        assert len(first) == batch_size // 2  # batch/N each (5 splits 2 + 3)
    # A different seed would give other batches: the equality above is not a coincidence.
    other = DataLoader(list(range(23)), batch_size, shuffle=True, drop_last=True)
    assert not all(
        torch.equal(a, b) for a, b in zip(whole, batches_of_two_epochs(other), strict=True)
    )


def test_a_batch_smaller_than_the_processes_is_refused_in_training_and_empty_in_evaluation():
    with pytest.raises(UserFacingError, match="a training batch of 1 messages cannot be split"):
        list(ShardedBatches([[0, 1], [2]], rank=1, size=2, allow_empty=False))
    assert list(ShardedBatches([[0, 1], [2]], rank=0, size=2)) == [[0], []]
    assert list(ShardedBatches([[0, 1], [2]], rank=1, size=2)) == [[1], [2]]
    loader = DataLoader(list(range(3)), batch_size=2)
    assert list(World(0, 2, distributed=True).shard(loader))[1] is None
    with pytest.raises(UserFacingError, match="--batch-size 1 cannot be split across 2"):
        World(0, 2, distributed=True).check_batch_size(1)
    with pytest.raises(UserFacingError, match="--no-padding trains on one message at a time"):
        World(0, 2, distributed=True).check_batch_size(1, no_padding=True)
    World(0, 2, distributed=True).check_batch_size(3)  # 1 + 2: uneven, but allowed


@dataclass(frozen=True)
class CountingWorld(World):
    """A process of a pretend group whose batch holds ``total`` examples in all."""

    total: int = 0

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.total])


def test_weighed_pieces_average_to_the_gradient_of_the_whole_batch():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    inputs, labels = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])

    def gradient(loss: torch.Tensor) -> torch.Tensor:
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    whole = gradient(F.cross_entropy(model(inputs), labels))
    weighed, plain = [], []
    for rank in range(2):  # pieces of 2 and 3 examples
        start, end = share_bounds(5, rank, 2)
        piece = F.cross_entropy(model(inputs[start:end]), labels[start:end])
        loss, total = CountingWorld(rank, 2, distributed=True, total=5).weigh_loss(
            piece, end - start
        )
        assert total == 5
        weighed.append(gradient(loss))
        plain.append(gradient(F.cross_entropy(model(inputs[start:end]), labels[start:end])))
    # DDP averages the processes' gradients.
    assert torch.allclose(sum(weighed) / 2, whole, atol=1e-7)
    assert not torch.allclose(sum(plain) / 2, whole, atol=1e-3)  # unweighed, it is not


def test_each_process_takes_its_own_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_for_process("auto") == torch.device("cuda", 1)
    assert device_for_process("cuda") == torch.device("cuda", 1)
    assert device_for_process("cpu") == torch.device("cpu")
    with pytest.raises(UserFacingError, match="each process takes its own GPU"):
        device_for_process("cuda:0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserFacingError, match="use --nproc-per-node 1"):
        device_for_process("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_for_process("auto") == torch.device("cpu")


# --- The whole command under torchrun ---------------------------------------------------


def torchrun(*args: str | Path, **popen) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node 2 tests/tiny_train.py ARGS``: two CPU
    processes (gloo) training the tiny model."""
    env = {k: v for k, v in os.environ.items() if k not in ("SMS_SPAM_SOURCE", "GPT2_WEIGHTS_DIR")}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **popen.pop("env", {}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", str(ROOT / "tests" / "tiny_train.py"), *map(str, args)]
    return subprocess.Popen(command, env=env, text=True, **popen)


@contextmanager
def stopped_at_the_end(launched: subprocess.Popen) -> Iterator[None]:
    """Leave no process behind, whatever the test finds."""
    try:
        yield
    finally:
        if launched.poll() is None:  # torchrun stops its processes on SIGTERM
            launched.terminate()
            try:
                launched.wait(timeout=60)
            except subprocess.TimeoutExpired:
                launched.kill()


@pytest.fixture
def tiny_models(monkeypatch):
    build = finetune.build_classifier
    monkeypatch.setattr(
        finetune, "build_classifier", lambda *a, **k: build(*a, **{**k, **TINY_MODEL})
    )


# Two recipes: the fast path (block 1 trained on cached features shared by the processes,
# pieces of 4 + 4), and every layer on the straightforward path with uneven pieces (3 + 4),
# evaluating every 2 steps (those passes draw from the training loader's generator too).
RECIPES = {
    "fast": ["--batch-size", "8", "--epochs", "2", "--eval-freq", "2"],
    "all": ["--batch-size", "7", "--epochs", "1", "--trainable-layers", "all", "--eval-freq", "2"],
}


def test_two_processes_train_the_model_one_process_trains(tmp_path, tiny_models, capsys):
    data = write_synthetic_splits(tmp_path / "data", sizes=(48, 17, 16))
    common = ["--data-dir", data, "--weights", "random", "--device", "cpu"]
    common += ["--precision", "fp32"]  # one and two processes agree to 1e-5 in float32

    def command(runs: Path, recipe: str) -> list[str]:
        return [*map(str, common), "--run-dir", str(runs / recipe), *RECIPES[recipe]]

    two = torchrun(
        *command(tmp_path / "two", "fast"),
        "+",
        *command(tmp_path / "two", "all"),
        "+",  # the fast recipe again: rank 0 loads what the first kept, rank 1 receives it
        *command(tmp_path / "again", "fast"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={CACHE_DIR_ENV: str(tmp_path / "cache")},  # of their own: computed, then loaded
    )
    with stopped_at_the_end(two):
        for recipe in RECIPES:  # the one-process runs, here, while the two processes work
            assert main(["train", *command(tmp_path / "one", recipe)]) == 0
        out, err = two.communicate(timeout=300)
    assert two.returncode == 0, err[-3000:]

    # Only rank 0 prints: each run's lines once.
    assert out.count("Accuracy on every example") == 3, out
    frozen = [line for line in out.splitlines() if line.startswith("Frozen blocks' output")]
    assert [": computed and kept in " in line for line in frozen] == [True, False]
    assert ": loaded in " in frozen[1] and "computed by an earlier run on " in frozen[1]
    assert "each computing 4 of the 8 messages of every batch" in out
    assert "each computing 3 or 4 of the 7 messages of every batch" in out
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["all", "fast"]
    for recipe in RECIPES:
        one, two_dir = tmp_path / "one" / recipe, tmp_path / "two" / recipe
        # One run folder each, written once (no leftovers of a second writer).
        assert sorted(p.name for p in two_dir.iterdir()) == sorted(p.name for p in one.iterdir())
        expected, got = (
            load_file(one / "model.safetensors"),
            load_file(two_dir / "model.safetensors"),
        )
        assert expected.keys() == got.keys()
        for name in expected:
            assert torch.allclose(got[name], expected[name], rtol=0, atol=1e-5), name
        metrics = [json.loads((d / "metrics.json").read_text()) for d in (one, two_dir)]
        assert [m["processes"] for m in metrics] == [1, 2]
        assert metrics[1]["accuracy"] == metrics[0]["accuracy"]  # every example, once
        histories = [json.loads((d / "history.json").read_text()) for d in (one, two_dir)]
        for key in ("examples_seen", "steps", "eval_steps", "train_accs", "val_accs"):
            assert histories[1][key] == histories[0][key], key
        for key in ("train_losses", "val_losses"):
            assert histories[1][key] == pytest.approx(histories[0][key], abs=1e-5), key
    # The same two processes from the kept output: the same computation, equal exactly.
    again, first = tmp_path / "again" / "fast", tmp_path / "two" / "fast"
    for name, tensor in load_file(first / "model.safetensors").items():
        assert torch.equal(load_file(again / "model.safetensors")[name], tensor), name
    histories = [json.loads((d / "history.json").read_text()) for d in (first, again)]
    assert {k: v for k, v in histories[1].items() if k != "seconds"} == {
        k: v for k, v in histories[0].items() if k != "seconds"
    }


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs POSIX signals")
def test_interrupting_one_process_stops_them_all_and_saves_nothing(tmp_path):
    data = write_synthetic_splits(tmp_path / "data", sizes=(48, 17, 16))
    pids = tmp_path / "pids"
    pids.mkdir()
    run_dir = tmp_path / "runs" / "run"
    two = torchrun(
        *["--data-dir", data, "--run-dir", run_dir, "--weights", "random", "--device", "cpu"],
        *["--epochs", "100000", "--eval-freq", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"TINY_TRAIN_PID_DIR": str(pids)},
    )
    with stopped_at_the_end(two):
        for line in two.stdout:  # wait until training is under way
            if line.startswith("Ep 1"):
                break
        else:
            pytest.fail(f"training did not start: {two.stderr.read()[-3000:]}")
        assert run_dir.is_dir()  # claimed by rank 0
        os.kill(int((pids / "1").read_text()), signal.SIGINT)
        out, err = two.communicate(timeout=120)
    assert two.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("gpt-spam train:")]
    assert ours == [
        "gpt-spam train: error: stopped because another training process ended "
        "(interrupted or failed): nothing was saved"
    ]
    assert "Saved the run" not in out
    assert not run_dir.exists()
    assert list((tmp_path / "runs").iterdir()) == []
