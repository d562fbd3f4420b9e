"""Loss, accuracy and the training loop of sections 6.6 and 6.7, in the book's shape.

Each function takes the book's arguments and computes what the book computes: ``model``
is the book's ``GPTModel`` with its new 2-way head, the loaders yield the book's
``(input_batch, target_batch)``, and the logits read are those of the last position.

The project's improvements are keywords away. ``token_position="flexible"`` reads each
message's last real token instead of a padding token. Loaders may also yield each
message's real length (``(inputs, labels, lengths)``, as ``create_data_loaders`` does).
And ``model`` may be a classifier module that maps ``(inputs, lengths)`` to class logits
itself: ``GPTClassifier`` (token ids in), or the fast path's ``PrefixCachedClassifier``
(cached hidden states in). One loop trains all of them, on exactly the same batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ch06_classification.classifier import classified_positions
from ch06_classification.devices import autocast
from gpt.errors import UserFacingError
from gpt.model import GPTModel
from gpt.tokenizer import END_OF_TEXT_ID

if TYPE_CHECKING:
    from ch06_classification.distributed import World


def unpack_batch(batch: Sequence[torch.Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(inputs, targets, lengths)`` of a batch: the book's ``(input_batch, target_batch)``
    (lengths None) or the project's ``Batch`` with each message's real length."""
    if len(batch) == 2:
        return batch[0], batch[1], None
    input_batch, target_batch, lengths = batch
    return input_batch, target_batch, lengths


def classification_logits(
    model: nn.Module,
    input_batch: Tensor,
    lengths: Tensor | None = None,
    token_position: str = "last",
    pad_token_id: int = END_OF_TEXT_ID,
) -> Tensor:
    """Class logits [batch, classes] of one token per message.

    ``model`` is the book's ``GPTModel`` with its new 2-way head, which returns logits for
    every position: the book reads the last (``token_position="last"``, the default).
    ``"flexible"`` reads each message's last real token, at ``lengths - 1``; without
    ``lengths``, they are counted as the tokens that are not ``pad_token_id`` (a message's
    own tokens never are: see ``encode_message``). ``"first"`` reads the first token.

    Any other module (``GPTClassifier``, the fast path's ``PrefixCachedClassifier``) reads
    its own token: it maps ``(inputs, lengths)`` to [batch, classes] itself.
    """
    if not isinstance(model, GPTModel):
        return model(input_batch, lengths)
    logits = model(input_batch)  # [batch, tokens, classes]
    if token_position == "last":
        return logits[:, -1, :]  # the book's choice
    if lengths is None:
        lengths = (input_batch != pad_token_id).sum(dim=1)
    positions = classified_positions(lengths, input_batch.shape[1], token_position)
    return logits[torch.arange(input_batch.shape[0], device=logits.device), positions]


def calc_loss_batch(
    input_batch: Tensor,
    target_batch: Tensor,
    model: nn.Module,
    device: torch.device | str,
    lengths: Tensor | None = None,
    token_position: str = "last",
) -> Tensor:
    """Cross-entropy of the classified token's logits against the labels (the book's).

    ``lengths`` and ``token_position`` as in :func:`classification_logits`.
    """
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    if lengths is not None:
        lengths = lengths.to(device)
    logits = classification_logits(model, input_batch, lengths, token_position)
    return F.cross_entropy(logits.float(), target_batch)


def _first_batches(data_loader: Iterable[Any], num_batches: int | None) -> Iterable[Any]:
    for index, batch in enumerate(data_loader):
        if num_batches is not None and index >= num_batches:
            break
        yield unpack_batch(batch)


def calc_loss_loader(
    data_loader: Iterable[Any],
    model: nn.Module,
    device: torch.device | str,
    num_batches: int | None = None,
    token_position: str = "last",
) -> float:
    """Mean loss over the first ``num_batches`` batches (all of them if None), the book's.

    Batches are the book's ``(input_batch, target_batch)`` or carry lengths too.
    """
    total, count = 0.0, 0
    with torch.no_grad():
        for input_batch, target_batch, lengths in _first_batches(data_loader, num_batches):
            loss = calc_loss_batch(
                input_batch, target_batch, model, device, lengths, token_position
            )
            total += loss.item()
            count += 1
    return total / count if count else float("nan")


def calc_accuracy_loader(
    data_loader: Iterable[Any],
    model: nn.Module,
    device: torch.device | str,
    num_batches: int | None = None,
    token_position: str = "last",
) -> float:
    """Fraction of examples whose most likely class is the label (all batches if None).

    As in the book, the model is put in evaluation mode (and left there).
    """
    model.eval()
    correct, seen = 0, 0
    with torch.no_grad():
        for input_batch, target_batch, lengths in _first_batches(data_loader, num_batches):
            lengths = None if lengths is None else lengths.to(device)
            logits = classification_logits(model, input_batch.to(device), lengths, token_position)
            correct += (logits.argmax(dim=-1) == target_batch.to(device)).sum().item()
            seen += target_batch.shape[0]
    return correct / seen if seen else float("nan")


def collect_logits(
    data_loader: Iterable[Any],
    model: nn.Module,
    device: torch.device | str,
    token_position: str = "last",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every example's logits and label, in the loader's order: ([n, classes], [n]) on the CPU."""
    logits, labels = [], []
    with torch.no_grad():
        for input_batch, target_batch, lengths in _first_batches(data_loader, None):
            lengths = None if lengths is None else lengths.to(device)
            batch_logits = classification_logits(
                model, input_batch.to(device), lengths, token_position
            )
            logits.append(batch_logits.float().cpu())
            labels.append(target_batch)
    return torch.cat(logits), torch.cat(labels)


def evaluate_model(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    device: torch.device | str,
    eval_iter: int,
    token_position: str = "last",
    *,
    loss_loader: Callable[..., float] | None = None,
) -> tuple[float, float]:
    """Training and validation loss on ``eval_iter`` batches each, in evaluation mode.

    ``loss_loader`` replaces ``calc_loss_loader`` (with several processes, the one that
    counts every process's examples: ``World.calc_loss_loader``)."""
    loss_of = loss_loader or calc_loss_loader
    model.eval()
    train_loss = loss_of(train_loader, model, device, eval_iter, token_position)
    val_loss = loss_of(val_loader, model, device, eval_iter, token_position)
    model.train()
    return train_loss, val_loss


@dataclass
class TrainingHistory:
    """What ``train_classifier_simple`` measured along the way (for plots and history.json).

    It unpacks into the book's five return values:
    ``train_losses, val_losses, train_accs, val_accs, examples_seen = history``.
    """

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_examples_seen: list[int] = field(default_factory=list)
    train_accs: list[float] = field(default_factory=list)
    val_accs: list[float] = field(default_factory=list)
    examples_seen: int = 0
    steps: int = 0
    seconds: float = 0.0

    def __iter__(self) -> Iterator[Any]:
        book_values = (
            self.train_losses,
            self.val_losses,
            self.train_accs,
            self.val_accs,
            self.examples_seen,
        )
        return iter(book_values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_classifier_simple(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    token_position: str = "last",
    precision: str = "fp32",
    log: Callable[[str], None] | None = print,
    accumulation_steps: int = 1,
    world: World | None = None,
) -> TrainingHistory:
    """The book's training loop: minimise the loss, evaluate every ``eval_freq`` steps on
    ``eval_iter`` batches, and measure accuracy on ``eval_iter`` batches after each epoch.

    Returns a :class:`TrainingHistory`, which unpacks into the book's five values.
    ``token_position`` applies to the book's bare ``GPTModel`` (see
    :func:`classification_logits`); ``precision="bf16"`` runs the matrix products in bfloat16.
    With ``accumulation_steps=N`` (the bonus experiments' gradient accumulation), the
    gradients of N batches are summed, each loss scaled by 1/N, and the optimizer steps
    every N batches and after the last batch of an epoch: the update of a batch N times
    larger, in the memory of one. A "step" in the history is still one batch, as in the book.
    With ``world`` (several processes under torchrun, ``model`` wrapped in DDP and the
    loaders sharded: see distributed.py), each process trains on its piece of every batch
    and the evaluations count every process's examples. A loss that is NaN or infinite
    stops training at once (:func:`check_finite_loss`), which the book's loop would train on.
    """
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
                with autocast(device, precision):
                    train_loss, val_loss = evaluate_model(
                        model,
                        train_loader,
                        val_loader,
                        device,
                        eval_iter,
                        token_position,
                        loss_loader=loss_of,
                    )
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
    loss: Tensor,
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
