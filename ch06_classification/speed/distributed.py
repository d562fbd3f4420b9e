"""Training on several processes at once: PyTorch's DistributedDataParallel under torchrun.

``torchrun --nproc-per-node N scripts/03_train.py ...`` starts N copies of the same
command, one per device. Each copy (a *process*, numbered by its *rank*) does this:

1. It joins the others (:func:`training_processes`): ``torch.distributed`` reads the
   addresses and ranks torchrun puts in the environment, so running on several machines
   needs nothing of ours, only torchrun's rendezvous flags. Each process computes on its own
   GPU, ``cuda:LOCAL_RANK``, and the processes talk through NCCL; without GPUs they use
   the CPU and gloo.
2. It reads its share of every batch (:class:`ShardedBatches`): all processes draw the very
   batches the one-process run draws, from a loader seeded the same way, and each keeps
   its consecutive piece of every batch. Together they see each batch once.
3. It computes the gradient of its piece, and ``DistributedDataParallel`` (DDP) averages the
   processes' gradients during ``backward``. The book's loss is the *mean* over the batch,
   so each process weighs its piece's mean loss by its share of the batch's examples
   (:meth:`World.weigh_loss`): the average is then exactly the gradient of the whole batch's
   mean loss, even when the pieces differ in size. Every process takes the same optimizer
   step, so the copies of the model stay identical.
4. It evaluates its share and adds its counts to the others' (``all_reduce``): every
   reported loss and accuracy counts each example once, as the one-process run counts it.

Only the first process (rank 0) prints and writes the run folder. With one process (no
torchrun) :class:`World` stands for that process alone, and every method is the plain thing.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler, Subset

from ch06_classification.training import (
    calc_accuracy_loader,
    calc_loss_loader,
    collect_logits,
)
from gpt.errors import UserFacingError

T = TypeVar("T")

# What torchrun (and any launcher following its convention) sets in each process.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class PeerStoppedError(UserFacingError):
    """Another training process ended (interrupted, failed, killed) before this one."""


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def launched_rank() -> int:
    """This process's rank as torchrun numbered it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def share_bounds(total: int, rank: int, size: int) -> tuple[int, int]:
    """Where process ``rank``'s consecutive piece of ``total`` items starts and ends: the
    pieces differ in size by at most one and together cover every item once."""
    return total * rank // size, total * (rank + 1) // size


class ShardedBatches(Sampler[list[int]]):
    """Process ``rank``'s piece of every batch that ``batches`` (a loader's batch sampler)
    yields: the same batches in the same order in every process, each cut into ``size``
    consecutive pieces. A piece may be empty (a last batch smaller than ``size``) unless
    ``allow_empty`` is False, which makes that an error."""

    def __init__(
        self, batches: Iterable[list[int]], rank: int, size: int, allow_empty: bool = True
    ) -> None:
        self.batches, self.rank, self.size = batches, rank, size
        self.allow_empty = allow_empty

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            batch = list(batch)
            if len(batch) < self.size and not self.allow_empty:
                raise UserFacingError(
                    f"a training batch of {len(batch)} messages cannot be split across "
                    f"{self.size} processes: use a --batch-size of at least {self.size}"
                )
            start, end = share_bounds(len(batch), self.rank, self.size)
            yield batch[start:end]


def _collate_unless_empty(collate_fn: Callable[[list[Any]], Any], examples: list[Any]) -> Any:
    return collate_fn(examples) if examples else None


@dataclass(frozen=True)
class World:
    """The training processes, seen from one of them: its rank, how many there are, and
    its device. ``World()`` is a single process, for which every method is the plain thing."""

    rank: int = 0
    size: int = 1
    device: torch.device | None = None  # None: one process, which picks its own device
    distributed: bool = False  # whether a process group joins the processes

    @property
    def is_main(self) -> bool:
        """Whether this is the process that prints and writes (rank 0)."""
        return self.rank == 0

    # --- Talking to the other processes --------------------------------------------------

    def sum(self, values: Tensor) -> Tensor:
        """``values`` added up over every process (on the CPU)."""
        if not self.distributed:
            return values
        values = values.to(self.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values.cpu()

    def all_agree(self, ok: bool) -> bool:
        """Whether every process says ``ok``."""
        if not self.distributed:
            return ok
        flag = torch.tensor([int(ok)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def gather_rows(self, rows: Tensor, counts: Sequence[int]) -> list[Tensor]:
        """Every process's ``rows`` (``counts[r]`` of them in process r), in rank order.

        Every process must know every count; the tensors travel padded to the longest."""
        if not self.distributed:
            return [rows]
        padded = rows.new_zeros((max(counts), *rows.shape[1:]))
        padded[: len(rows)] = rows
        pieces = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(pieces, padded)
        return [piece[:count] for piece, count in zip(pieces, counts, strict=True)]

    def gather_objects(self, value: T) -> list[T]:
        """Every process's ``value`` (anything picklable), in rank order."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def from_main(self, values: Tensor) -> Tensor:
        """The main process's ``values``, in every process (on its device). The others pass
        a tensor of the same shape and dtype, which receives them."""
        if not self.distributed:
            return values
        values = values.to(self.device)
        dist.broadcast(values, src=0)
        return values

    @contextmanager
    def on_main(self, manager: AbstractContextManager[T]) -> Iterator[T | None]:
        """Enter ``manager`` (claiming the run folder, say) in the main process only; the
        others get None. If the main process cannot enter it, every process stops, and only
        the main one says why."""
        if not self.distributed:
            with manager as value:
                yield value
            return
        with ExitStack() as stack:
            value = None
            if self.is_main:
                try:
                    value = stack.enter_context(manager)
                except BaseException:
                    self.all_agree(False)
                    raise
            if not self.all_agree(True):
                raise SystemExit(1)  # the main process reports why
            yield value

    # --- What training asks of it ---------------------------------------------------------

    def describe(self, batch_size: int) -> str:
        """One line on how the processes share the work."""
        backend = dist.get_backend() if self.distributed else "none"
        low, high = batch_size // self.size, -(-batch_size // self.size)
        each = f"{low}" if low == high else f"{low} or {high}"
        return (
            f"Distributed data parallel: {self.size} process{'es' if self.size > 1 else ''} "
            f"({backend} on {self.device.type if self.device else 'cpu'}), each computing "
            f"{each} of the {batch_size} messages of every batch"
        )

    def check_batch_size(self, batch_size: int, no_padding: bool = False) -> None:
        """Refuse a batch that cannot give every process at least one message."""
        if batch_size >= self.size:
            return
        if no_padding:
            raise UserFacingError(
                f"--no-padding trains on one message at a time, which cannot be split "
                f"across {self.size} processes: drop --no-padding, or train on one process"
            )
        raise UserFacingError(
            f"--batch-size {batch_size} cannot be split across {self.size} processes (each "
            f"computes its piece of every batch): use a --batch-size of at least {self.size}"
        )

    def shard(self, loader: DataLoader, training: bool = False) -> DataLoader:
        """A loader yielding this process's piece of each of ``loader``'s batches.

        It shares ``loader``'s batch sampler and random generator, so it draws from the
        generator exactly when and what ``loader`` would: its batches are ``loader``'s,
        epoch after epoch. An empty piece comes as None (the ``training`` loader refuses
        those: every process must compute something for DDP's averaging)."""
        if not self.distributed:
            return loader
        return DataLoader(
            loader.dataset,
            batch_sampler=ShardedBatches(
                loader.batch_sampler,  # type: ignore[arg-type]
                self.rank,
                self.size,
                allow_empty=not training,
            ),
            collate_fn=functools.partial(_collate_unless_empty, loader.collate_fn),
            generator=loader.generator,
            num_workers=loader.num_workers,
        )

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel, which averages its gradients over the
        processes in ``backward`` (the module itself with one process)."""
        if not self.distributed:
            return module
        # Frozen weights (and buffers, if any) are the same in every process: the same
        # seed or file made them. DDP need not send them from rank 0 to the others at the
        # start (the 500 MB of gpt2-small's frozen blocks, 6 GB for gpt2-xl's), nor the
        # buffers before every step.
        fixed = [name for name, p in module.named_parameters() if not p.requires_grad]
        fixed += [name for name, _ in module.named_buffers()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, fixed)
        cuda = self.device is not None and self.device.type == "cuda"
        return DistributedDataParallel(module, device_ids=[self.device] if cuda else None)

    def weigh_loss(self, loss: Tensor, examples: int) -> tuple[Tensor, int]:
        """This process's mean ``loss`` over its ``examples``, weighed for DDP's averaging,
        and the number of examples in the whole batch.

        DDP divides the sum of the processes' gradients by their number N. Weighing a
        piece's mean loss by ``examples * N / total`` makes that average the gradient of
        the whole batch's mean loss (the weight is exactly 1 for equal pieces)."""
        total = int(self.sum(torch.tensor([examples], dtype=torch.long)).item())
        if total == examples * self.size:
            return loss, total
        return loss * (examples * self.size / total), total

    # --- Evaluation over every process's share (the book's functions, counted once) ----

    def calc_loss_loader(
        self,
        data_loader: Iterable[Any],
        model: nn.Module,
        device: torch.device | str,
        num_batches: int | None = None,
        token_position: str = "last",
    ) -> float:
        """The book's ``calc_loss_loader`` over the whole batches: the mean over the first
        ``num_batches`` batches of each batch's mean loss, each process computing its piece
        (with the book's function, on a loader of that one piece)."""
        model = _unwrap(model)
        per_batch: list[tuple[float, int]] = []
        for batch in islice(data_loader, num_batches):
            examples = 0 if batch is None else len(batch[1])  # None: an empty piece
            mean = (
                calc_loss_loader([batch], model, device, None, token_position) if examples else 0.0
            )
            per_batch.append((mean * examples, examples))
        if not per_batch:
            return float("nan")
        totals = self.sum(torch.tensor(per_batch, dtype=torch.float64))  # [batches, 2]
        return (totals[:, 0] / totals[:, 1]).mean().item()

    def calc_accuracy_loader(
        self,
        data_loader: Iterable[Any],
        model: nn.Module,
        device: torch.device | str,
        num_batches: int | None = None,
        token_position: str = "last",
    ) -> float:
        """The book's ``calc_accuracy_loader`` over the whole batches (model left in
        evaluation mode, as the book leaves it), each process counting its pieces with it."""
        model.eval()
        model = _unwrap(model)
        correct, seen = 0.0, 0
        for batch in islice(data_loader, num_batches):
            if batch is not None:
                examples = len(batch[1])
                accuracy = calc_accuracy_loader([batch], model, device, None, token_position)
                correct, seen = correct + accuracy * examples, seen + examples
        correct, seen = self.sum(torch.tensor([correct, seen], dtype=torch.float64)).tolist()
        return round(correct) / seen if seen else float("nan")

    def collect_logits(
        self, loader: DataLoader, model: nn.Module, device: torch.device | str
    ) -> tuple[Tensor, Tensor]:
        """``collect_logits`` of every example of ``loader`` (in order, none dropped), each
        process computing a consecutive piece of the examples; every process gets them all."""
        if not self.distributed:
            return collect_logits(loader, model, device)
        dataset = loader.dataset
        start, end = share_bounds(len(dataset), self.rank, self.size)  # type: ignore[arg-type]
        piece = DataLoader(
            Subset(dataset, range(start, end)),
            batch_size=loader.batch_size,
            collate_fn=loader.collate_fn,
        )
        mine = collect_logits(piece, _unwrap(model), device) if end > start else None
        pieces = [p for p in self.gather_objects(mine) if p is not None]
        return torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])

    def encode_prefix(
        self,
        model: Any,
        sequences: Sequence[Tensor],
        num_blocks: int,
        device: torch.device,
        precision: str = "fp32",
        progress: bool = False,
    ) -> list[Tensor]:
        """The fast path's ``encode_prefix``, the work split across the processes: each
        encodes every N-th distinct sequence (taken in order of length, so the pieces cost
        about the same), and all of them receive every result."""
        from ch06_classification.speed.fast_path import encode_prefix

        if not self.distributed:
            return encode_prefix(
                model, sequences, num_blocks, device, precision=precision, progress=progress
            )
        keys = [tuple(sequence.tolist()) for sequence in sequences]
        first_seen: dict[tuple[int, ...], int] = {}
        for i, key in enumerate(keys):
            first_seen.setdefault(key, i)
        distinct = sorted(first_seen.values(), key=lambda i: len(sequences[i]))
        assigned = [distinct[rank :: self.size] for rank in range(self.size)]
        mine = encode_prefix(
            model,
            [sequences[i] for i in assigned[self.rank]],
            num_blocks,
            device,
            precision=precision,
            progress=progress,
        )
        stored = torch.bfloat16 if precision == "bf16" else torch.float32  # as encode_prefix
        rows = torch.cat(mine) if mine else torch.empty(0, model.cfg.emb_dim, dtype=stored)
        rows = rows.to(device)
        counts = [sum(len(sequences[i]) for i in indices) for indices in assigned]
        features: dict[int, Tensor] = {}
        for indices, piece in zip(assigned, self.gather_rows(rows, counts), strict=True):
            if indices:
                sizes = [len(sequences[i]) for i in indices]
                features.update(zip(indices, piece.split(sizes), strict=True))
        return [features[first_seen[key]] for key in keys]


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP: evaluation runs it directly, without DDP's bookkeeping (and
    an empty piece of a batch may skip it)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def current_world() -> World:
    """The training processes this one belongs to: those :func:`training_processes` joined,
    or this process alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), device, distributed=True)


def device_for_process(requested: str = "auto") -> torch.device:
    """The device of the process torchrun numbered LOCAL_RANK on its machine."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if processes_here > gpus:
            raise UserFacingError(
                f"torchrun started {processes_here} processes on this machine, which has "
                f"{gpus} GPU{'s' if gpus > 1 else ''}: use --nproc-per-node {gpus} (one "
                "process per GPU), or --device cpu"
            )
        return torch.device("cuda", local_rank)
    if requested == "cuda":
        raise UserFacingError("--device cuda: this machine has no CUDA GPU")
    if requested in ("auto", "cpu"):
        return torch.device("cpu")
    raise UserFacingError(
        f"--device {requested} under torchrun: each process takes its own GPU "
        "(cuda:LOCAL_RANK) or the CPU, so use --device auto, cuda or cpu (and "
        "CUDA_VISIBLE_DEVICES to choose the GPUs)"
    )


@contextmanager
def training_processes(requested_device: str = "auto") -> Iterator[World]:
    """Join the processes torchrun started, for the block; without torchrun, this one alone.

    The backend follows the device: NCCL between GPUs, gloo between CPUs. The processes stay
    joined until they exit (a second block reuses the group: joining anew would meet the
    first group's stale entries in torchrun's rendezvous store).

    Only rank 0 reports: the others end quietly (exit status 1, or 130 when interrupted) on
    a one-line error, an interrupt, or another process's end. Rank 0 says "interrupted", or
    that another process stopped. SIGTERM, which torchrun sends to the others when one
    process ends, interrupts like Ctrl-C, so that each process cleans up (the run folder
    above all).
    """
    if not launched_by_torchrun():
        yield World()
        return
    rank = launched_rank()
    try:
        if not dist.is_initialized():
            _join(requested_device)
        with _sigterm_interrupts():
            yield current_world()
    except BaseException as error:
        _stopped.append(error)
        if isinstance(error, RuntimeError) and _is_peer_gone(error):
            if rank:
                raise SystemExit(1) from None
            raise PeerStoppedError(
                "stopped because another training process ended (interrupted or failed): "
                "nothing was saved"
            ) from None
        if rank and isinstance(error, KeyboardInterrupt):
            raise SystemExit(130) from None
        if rank and isinstance(error, UserFacingError):
            raise SystemExit(1) from None  # rank 0 meets the same problem and says it
        raise


_stopped: list[BaseException] = []  # why the processes stopped early, if they did


def _join(requested_device: str) -> None:
    device = device_for_process(requested_device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    atexit.register(_leave)


def _leave() -> None:
    # After a failure the others may be gone: then there is nobody to leave politely.
    if dist.is_initialized() and not _stopped:
        dist.destroy_process_group()


def _is_peer_gone(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process is gone."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return any(
        sign in text
        for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    )


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the cleanup finish
        if sys.exc_info()[0] is None:  # not already stopping (on a peer's failure, say)
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    except BaseException:
        # Stopping already: torchrun's SIGTERM must not cut short the report and the exit.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise
    signal.signal(signal.SIGTERM, previous)
