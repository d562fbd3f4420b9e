"""The pipeline's training loop: the book's ``train_classifier_simple``, with what a real run
needs around it.

Each step is the book's (``calc_loss_batch``, ``evaluate_model``'s losses every
``eval_freq`` steps, ``calc_accuracy_loader`` after each epoch); added around it:

- ``precision="bf16"``: the matrix products in bfloat16 (autocast), the loss in float32;
- ``accumulation_steps=N`` (the bonus experiments' gradient accumulation): the gradients of
  N batches summed, each loss scaled by 1/N, one optimizer step every N batches and after
  an epoch's last batch: the update of a batch N times larger, in the memory of one;
- ``world``: several processes under torchrun, ``model`` wrapped in DDP, the loaders
  sharded; every evaluation counts every process's examples;
- a loss that is NaN or infinite stops training at once (:func:`check_finite_loss`),
  before its gradients reach the weights: the book's loop would train on it;
- log lines with the examples seen and the seconds spent, through ``log``.

With none of these (float32, N=1, one process) it computes exactly what
``train_classifier_simple`` computes: ``tests/finetuning/test_loop.py`` checks the five
lists against it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ch06_classification.speed.devices import autocast
from ch06_classification.training import (
    TrainingHistory,
    calc_accuracy_loader,
    calc_loss_batch,
    calc_loss_loader,
    unpack_batch,
)
from gpt.errors import UserFacingError

if TYPE_CHECKING:
    from ch06_classification.finetuning.settings import TrainingSettings
    from ch06_classification.speed.distributed import World


def train_classifier(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    settings: TrainingSettings,
    *,
    device: torch.device | str,
    world: World | None = None,
    log: Callable[[str], None] | None = print,
) -> TrainingHistory:
    """``train_classifier_simple`` for ``settings`` (its ``epochs``, ``eval_freq``,
    ``eval_iter``, ``token_position``, and the additions: ``precision``, which must be
    "fp32" or "bf16" by now, and ``accumulation_steps``), with several processes and timed
    log lines (see the module's docstring)."""
    num_epochs, eval_freq, eval_iter = settings.epochs, settings.eval_freq, settings.eval_iter
    precision, accumulation_steps = settings.precision, settings.accumulation_steps
    token_position = settings.token_position
    if accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be at least 1, not {accumulation_steps}")
    history = TrainingHistory()
    say = log or (lambda message: None)
    loss_of, accuracy_of = calc_loss_loader, calc_accuracy_loader
    if world is not None:  # the same numbers, over the whole batches of all the processes
        loss_of, accuracy_of = world.calc_loss_loader, world.calc_accuracy_loader
    device = torch.device(device)
    start = time.perf_counter()
    updated = False  # whether the optimizer has changed the weights yet
    for epoch in range(num_epochs):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        num_batches = len(train_loader)  # type: ignore[arg-type]
        for batch_index, batch in enumerate(train_loader):
            input_batch, target_batch, lengths = unpack_batch(batch)
            with autocast(device, precision):
                loss = calc_loss_batch(
                    input_batch, target_batch, model, device, lengths, token_position
                )
            examples = target_batch.shape[0]
            if world is not None:  # this process's piece of the batch, weighed for DDP
                loss, examples = world.weigh_loss(loss, examples)
            check_finite_loss(loss, history.steps, epoch, optimizer, updated, world)
            (loss / accumulation_steps).backward()
            if (batch_index + 1) % accumulation_steps == 0 or batch_index + 1 == num_batches:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                updated = True
            history.examples_seen += examples
            history.steps += 1

            if (history.steps - 1) % eval_freq == 0:  # the book's global_step % eval_freq == 0
                model.eval()
                with autocast(device, precision):
                    train_loss, val_loss = (
                        loss_of(loader, model, device, eval_iter, token_position)
                        for loader in (train_loader, val_loader)
                    )
                model.train()
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                history.eval_steps.append(history.steps - 1)
                history.eval_examples_seen.append(history.examples_seen)
                say(
                    f"Ep {epoch + 1} (Step {history.steps - 1:06d}): "
                    f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f} "
                    f"[{history.examples_seen:,} examples, "
                    f"{time.perf_counter() - start:.1f} s]"
                )

        with autocast(device, precision):
            train_accuracy, val_accuracy = (
                accuracy_of(loader, model, device, eval_iter, token_position)
                for loader in (train_loader, val_loader)
            )
        history.train_accs.append(train_accuracy)
        history.val_accs.append(val_accuracy)
        say(
            f"Epoch {epoch + 1}/{num_epochs}: Training accuracy {train_accuracy * 100:.2f}% | "
            f"Validation accuracy {val_accuracy * 100:.2f}% "
            f"(first {eval_iter} batches of each, as in the book) "
            f"[{time.perf_counter() - start:.1f} s]"
        )
    history.seconds = time.perf_counter() - start
    return history


class TrainingDivergedError(UserFacingError):
    """The training loss, or the trained model's outputs, became NaN or infinite: the run
    would learn nothing from there on."""


def check_finite_loss(
    loss: torch.Tensor,
    step: int,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    updated: bool,
    world: World | None = None,
) -> None:
    """Stop training on a NaN or infinite loss (``step`` and ``epoch`` counted from 0),
    before its gradients reach the weights, with the likely cause.

    A NaN gradient turns every trained weight into NaN at the next optimizer step, and
    every later loss and prediction with it: training on would only spend the time and
    then save a model that predicts nothing. Checking costs one look at the loss per step
    (on a GPU, a wait for the step's forward pass). With several processes, every process
    stops if any one's loss is not finite.
    """
    finite = bool(torch.isfinite(loss.detach()).item())
    if world is not None:
        finite = world.all_agree(finite)
    if finite:
        return
    if updated:  # the loss was finite before the updates: they blew the weights up
        cause = f"the learning rate {optimizer.param_groups[0]['lr']:g} is likely too high"
    else:
        cause = (
            "that is before any update, so the starting model itself gives it (weights "
            "that are not finite numbers, or scaled up too far)"
        )
    value = loss.detach().item()  # this process's: another's may be the one not finite
    became = str(value) if not math.isfinite(value) else "NaN or infinite"
    raise TrainingDivergedError(
        f"the training loss became {became} at step {step} (epoch {epoch + 1}), so training "
        f"stopped and nothing was saved: {cause}"
    )


def make_optimizer(
    model: nn.Module,
    lr: float = 5e-5,
    weight_decay: float = 0.1,
    device: torch.device | None = None,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only, fused into one kernel where supported.

    The book passes all parameters; frozen ones have no gradient and are skipped anyway, but
    leaving them out is clearer. The fused update matters on a CPU: for gpt2-small's 7.09 M
    trainable parameters it takes ~3 ms a step against ~15 ms for the per-tensor loop.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = device or (params[0].device if params else torch.device("cpu"))
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
