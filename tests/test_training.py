"""Sections 6.6-6.7: loss, accuracy, the training loop, and the whole recipe."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from ch06_classification.finetuning.finetune import TrainingSettings, fine_tune
from ch06_classification.finetuning.loop import TrainingDivergedError, train_classifier
from ch06_classification.training import (
    calc_accuracy_loader,
    calc_loss_batch,
    calc_loss_loader,
)
from gpt.errors import UserFacingError
from tests.synthetic_splits import write_synthetic_splits

TINY_MODEL = {"emb_dim": 32, "n_layers": 2, "n_heads": 4}


class FixedLogits(nn.Module):
    """A stand-in model that returns the logits it is given as input."""

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return inputs


def test_loss_is_cross_entropy_of_the_classified_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    # -log softmax: row 1: log(1 + e^-2) = 0.126928; row 2: log(1 + e^1) = 1.313262
    expected = (0.126928 + 1.313262) / 2
    loss = calc_loss_batch(logits, labels, FixedLogits(), torch.device("cpu"))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_loader_averages_and_accuracy_on_hand_computed_batches():
    batches = [
        (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), torch.tensor([1, 1])),
        (torch.tensor([[0.0, 3.0], [5.0, 0.0]]), torch.tensor([1, 1]), torch.tensor([1, 1])),
        (torch.tensor([[0.0, 3.0]]), torch.tensor([1]), torch.tensor([1])),
    ]
    device = torch.device("cpu")
    model = FixedLogits()
    # correct: batch 1 -> 1 of 2, batch 2 -> 1 of 2, batch 3 -> 1 of 1
    assert calc_accuracy_loader(batches, model, device) == pytest.approx(3 / 5)
    assert calc_accuracy_loader(batches, model, device, num_batches=2) == pytest.approx(2 / 4)
    per_batch = [calc_loss_batch(x, y, model, device).item() for x, y, _ in batches]
    assert calc_loss_loader(batches, model, device) == pytest.approx(sum(per_batch) / 3)
    assert calc_loss_loader(batches, model, device, num_batches=1) == pytest.approx(per_batch[0])
    assert calc_loss_loader([], model, device) != calc_loss_loader([], model, device)  # NaN


class ScaledLogits(nn.Module):
    """A stand-in model with one trainable weight: the given logits times ``scale``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return inputs * self.scale


@pytest.mark.parametrize(
    ("nan_batch", "cause"),
    [
        (
            0,
            "that is before any update, so the starting model itself gives it (weights that "
            "are not finite numbers, or scaled up too far)",
        ),
        (2, "the learning rate 0.1 is likely too high"),
    ],
)
def test_a_loss_that_is_not_a_number_stops_training_before_it_reaches_the_weights(
    nan_batch: int, cause: str
) -> None:
    loader = [(torch.tensor([[1.0, -1.0]]), torch.tensor([0]), torch.tensor([1]))] * 4
    loader[nan_batch] = (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), torch.tensor([1]))
    model = ScaledLogits()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    with pytest.raises(TrainingDivergedError) as error:
        settings = TrainingSettings(epochs=3, eval_freq=100, eval_iter=1, precision="fp32")
        train_classifier(model, loader, loader[:1], optimizer, settings, device="cpu", log=None)

    assert isinstance(error.value, UserFacingError)  # one line at the command line
    assert str(error.value) == (
        f"the training loss became nan at step {nan_batch} (epoch 1), so training stopped "
        f"and nothing was saved: {cause}"
    )
    assert torch.isfinite(model.scale)  # its NaN gradient never reached the weight


def test_settings_that_are_not_finite_numbers_are_refused(tmp_path):
    data_dir = write_synthetic_splits(tmp_path, sizes=(16, 8, 8))
    for knob in ("lora_alpha", "lr", "weight_decay", "drop_rate"):
        for value in (float("nan"), float("inf")):
            settings = TrainingSettings(data_dir=str(data_dir), weights="random", **{knob: value})
            with pytest.raises(UserFacingError, match=f"TrainingSettings.{knob} is {value}"):
                fine_tune(settings, log=lambda line: None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_splits(tmp_path_factory.mktemp("data"), sizes=(160, 32, 32))


def test_evaluation_schedule_and_counts(data_dir):
    lines: list[str] = []
    settings = TrainingSettings(
        weights="random",
        data_dir=str(data_dir),
        epochs=2,
        eval_freq=7,
        eval_iter=2,
        config_overrides=TINY_MODEL,
    )
    result = fine_tune(settings, log=lines.append)
    history = result.history
    assert history.steps == 2 * (160 // 8)
    assert history.examples_seen == history.steps * 8
    assert history.eval_steps == list(range(0, history.steps, 7))  # the book's global_step % 7
    assert len(history.train_losses) == len(history.val_losses) == len(history.eval_steps)
    assert len(history.train_accs) == len(history.val_accs) == 2  # once per epoch
    assert any(line.startswith("Ep 1 (Step 000000): Train loss") for line in lines)
    assert any("Epoch 2/2: Training accuracy" in line for line in lines)
    assert any(line.startswith("Training path: fast") for line in lines)


def test_a_tiny_model_learns_a_tiny_task(data_dir):
    settings = TrainingSettings(
        weights="random",
        data_dir=str(data_dir),
        epochs=4,
        lr=1e-3,
        eval_freq=5,
        trainable_layers="all",
        config_overrides=TINY_MODEL,
    )
    result = fine_tune(settings, log=lambda line: None)
    history = result.history
    assert result.path == "full"  # all layers train: no frozen prefix to cache
    assert history.train_losses[-1] < 0.5 * history.train_losses[0]
    assert history.val_accs[-1] > history.val_accs[0] or history.val_accs[0] == 1.0
    assert result.accuracies["test"] >= 0.9  # the two classes use disjoint words


def test_bf16_autocast_trains_too(data_dir):
    settings = TrainingSettings(
        weights="random",
        data_dir=str(data_dir),
        epochs=2,
        precision="bf16",
        config_overrides=TINY_MODEL,
    )
    fp32 = fine_tune(
        TrainingSettings(**{**settings.to_dict(), "precision": "fp32"}),
        log=lambda _: None,
    )
    bf16 = fine_tune(settings, log=lambda line: None)
    assert abs(bf16.history.train_losses[-1] - fp32.history.train_losses[-1]) < 0.05
    assert abs(bf16.accuracies["test"] - fp32.accuracies["test"]) <= 0.1


@pytest.mark.slow
def test_real_data_small_random_model_all_layers_trainable(shared_data, tmp_path):
    """The real SMS data, a small random-init GPT (2 blocks, 64 wide), every layer trained.

    Measured on the 2-core CI machine: 7.4 s, 95.7 % test accuracy (97.3 % validation).
    The threshold, 90 %, is far above the 50 % of guessing on the balanced test split.
    """
    from ch06_classification.sources.sms import download_sms_spam, load_sms_spam
    from ch06_classification.sources.split_files import write_splits

    download_sms_spam(tmp_path, source=shared_data / "sms_spam_collection.zip", urls=[])
    write_splits(load_sms_spam(tmp_path), tmp_path)
    settings = TrainingSettings(
        weights="random",
        data_dir=str(tmp_path),
        trainable_layers="all",
        epochs=3,
        lr=5e-4,
        config_overrides={"emb_dim": 64, "n_layers": 2, "n_heads": 4},
    )
    start = time.perf_counter()
    result = fine_tune(settings, log=print)
    seconds = time.perf_counter() - start
    print(f"real data, small model: {seconds:.1f} s, accuracies {result.accuracies}")
    assert result.accuracies["test"] >= 0.90
