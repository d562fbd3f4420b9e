"""Loss, accuracy and the training loop of sections 6.6 and 6.7, as the book writes them.

Each function takes the book's arguments and computes what the book computes: ``model`` is
the book's ``GPTModel`` with its new 2-way head, the loaders yield the book's
``(input_batch, target_batch)``, and the logits read are those of the last position.

Two improvements are keywords away, defaulting to the book:

- ``token_position="flexible"`` reads each message's last *real* token instead of the last
  position, which is a padding token whenever the message is shorter than the row;
- loaders may also yield each message's real length, ``(input_batch, target_batch,
  lengths)`` (``SpamDataset(..., with_lengths=True)``), so the last real token is known
  whatever pads the row.

``model`` may also be a classifier module that picks its own token, mapping
``(input_batch, lengths)`` to class logits: the fast path's model is one
(``ch06_classification/speed/fast_path.py``), and trains here unchanged. The pipeline's
loop, with precision, gradient accumulation and several processes, wraps these functions
from outside: ``ch06_classification/finetuning/loop.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ch06_classification.classifier import classified_positions
from gpt.model import GPTModel
from gpt.tokenizer import END_OF_TEXT_ID


def unpack_batch(batch: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(input_batch, target_batch, lengths)``: the book's two tensors (lengths None), or
    three where the loader yields each message's real length too."""
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

    The book reads the last position: ``model(input_batch)[:, -1, :]``. ``"flexible"`` reads
    each message's last real token, at ``lengths - 1`` (without ``lengths``, counted as the
    tokens that are not ``pad_token_id``: a message's own tokens never are, see
    ``encode_message``); ``"first"`` reads the first token.
    """
    if not isinstance(model, GPTModel):  # a classifier module picks its own token
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
    """Cross-entropy of the classified token's logits against the labels (listing 6.8)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    if lengths is not None:
        lengths = lengths.to(device)
    logits = classification_logits(model, input_batch, lengths, token_position)
    return F.cross_entropy(logits.float(), target_batch)


def first_batches(data_loader: Iterable[Any], num_batches: int | None) -> Iterator[Any]:
    """The first ``num_batches`` batches (all if None) as ``(inputs, targets, lengths)``."""
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
    """Mean loss over the first ``num_batches`` batches (all if None), as the book's."""
    total_loss, count = 0.0, 0
    with torch.no_grad():
        for input_batch, target_batch, lengths in first_batches(data_loader, num_batches):
            loss = calc_loss_batch(
                input_batch, target_batch, model, device, lengths, token_position
            )
            total_loss += loss.item()
            count += 1
    return total_loss / count if count else float("nan")


def calc_accuracy_loader(
    data_loader: Iterable[Any],
    model: nn.Module,
    device: torch.device | str,
    num_batches: int | None = None,
    token_position: str = "last",
) -> float:
    """Fraction of messages whose most likely class is the label (listing 6.7).

    As in the book, the model is put in evaluation mode (and left there).
    """
    model.eval()
    correct_predictions, num_examples = 0, 0
    with torch.no_grad():
        for input_batch, target_batch, lengths in first_batches(data_loader, num_batches):
            lengths = None if lengths is None else lengths.to(device)
            logits = classification_logits(model, input_batch.to(device), lengths, token_position)
            predicted_labels = torch.argmax(logits, dim=-1)
            num_examples += predicted_labels.shape[0]
            correct_predictions += (predicted_labels == target_batch.to(device)).sum().item()
    return correct_predictions / num_examples if num_examples else float("nan")


def collect_logits(
    data_loader: Iterable[Any],
    model: nn.Module,
    device: torch.device | str,
    token_position: str = "last",
) -> tuple[Tensor, Tensor]:
    """Every message's logits and label, in the loader's order: ([n, classes], [n]) on the
    CPU. What the metrics of a whole split are computed from."""
    logits, labels = [], []
    with torch.no_grad():
        for input_batch, target_batch, lengths in first_batches(data_loader, None):
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
) -> tuple[float, float]:
    """Training and validation loss on ``eval_iter`` batches each, in evaluation mode."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, eval_iter, token_position)
        val_loss = calc_loss_loader(val_loader, model, device, eval_iter, token_position)
    model.train()
    return train_loss, val_loss


@dataclass
class TrainingHistory:
    """What training measured along the way. Unpacks into the book's five return values:
    ``train_losses, val_losses, train_accs, val_accs, examples_seen = history``.
    """

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)  # the step of each loss measured
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
) -> TrainingHistory:
    """The book's training loop (listing 6.10): minimise the loss, evaluate every
    ``eval_freq`` steps on ``eval_iter`` batches, and measure accuracy on ``eval_iter``
    batches after each epoch. Returns a :class:`TrainingHistory`, which unpacks into the
    book's five values.
    """
    history = TrainingHistory()
    global_step = -1
    for epoch in range(num_epochs):
        model.train()  # the accuracies at the end of the last epoch left it in eval mode
        for batch in train_loader:
            input_batch, target_batch, lengths = unpack_batch(batch)
            optimizer.zero_grad()  # reset the gradients of the previous batch
            loss = calc_loss_batch(
                input_batch, target_batch, model, device, lengths, token_position
            )
            loss.backward()  # gradients of the loss
            optimizer.step()  # update the trainable weights
            history.examples_seen += input_batch.shape[0]
            global_step += 1
            history.steps += 1

            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader, device, eval_iter, token_position
                )
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                history.eval_steps.append(global_step)
                history.eval_examples_seen.append(history.examples_seen)
                print(
                    f"Ep {epoch + 1} (Step {global_step:06d}): "
                    f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
                )

        train_accuracy = calc_accuracy_loader(
            train_loader, model, device, eval_iter, token_position
        )
        val_accuracy = calc_accuracy_loader(val_loader, model, device, eval_iter, token_position)
        print(f"Training accuracy: {train_accuracy * 100:.2f}% | ", end="")
        print(f"Validation accuracy: {val_accuracy * 100:.2f}%")
        history.train_accs.append(train_accuracy)
        history.val_accs.append(val_accuracy)
    return history
