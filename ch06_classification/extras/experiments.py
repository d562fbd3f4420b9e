"""The chapter's bonus experiments: one table, one command per row.

The book's companion code answers readers' "what if" questions (the first token instead of
the last, more layers, a bigger GPT-2, no padding, LoRA ...) with a table of experiments.
Each row here is an exact ``gpt-spam train`` command (or a classical baseline), run into
its own folder; finished rows are skipped, so an interrupted table resumes where it
stopped. Every row varies one thing from the book's recipe, which reads the *last*
position of rows padded to the longest training message (``--token-position last``),
so that the figures compare with the published ones.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ch06_classification.finetuning.settings import settings_from_arguments
from ch06_classification.storage.datafiles import atomic_output
from ch06_classification.storage.safe_files import read_json, write_json

if TYPE_CHECKING:
    from ch06_classification.finetuning.finetune import TrainingSettings

ROW_FILE = "row.json"  # written last: a row folder with it is finished
TABLE_NAME = "table"  # table.md, table.csv, table.json


@dataclass(frozen=True)
class Published:
    """A row of the published table (gpt2-small pretrained on an A100 unless it says)."""

    train: float
    validation: float
    test: float
    minutes: float


@dataclass(frozen=True)
class Experiment:
    number: int
    name: str
    options: tuple[str, ...] = ()  # `gpt-spam train` options
    baseline: str | None = None  # or a ch06_classification.extras.baseline kind
    published: Published | None = None
    # Whether the row reads the table's token (the book's `last`, unless told otherwise),
    # rather than choosing its own (rows 2 and 16 are about the token).
    reads_table_token: bool = True

    @property
    def folder(self) -> str:
        return f"{self.number:02d}"

    @property
    def published_weights(self) -> str:
        """The weights of the published row: its own ``--weights`` (row 10: random), else
        the book's pretrained ones."""
        if "--weights" in self.options:
            return self.options[self.options.index("--weights") + 1]
        return "pretrained"

    def command(
        self, weights: str = "pretrained", token_position: str = "last", precision: str = "auto"
    ) -> list[str]:
        """The exact command line of this row (without data, device and output options)."""
        if self.baseline:
            return ["baseline", "--baselines", self.baseline]
        token = ["--token-position", token_position] if self.reads_table_token else []
        # auto, train's default, is left implied: bfloat16 where the device has the units
        chosen = ["--precision", precision] if precision != "auto" else []
        if "--weights" in self.options:  # the row is about the weights (row 10)
            return ["train", *token, *self.options, *chosen]
        return ["train", *token, *self.options, "--weights", weights, *chosen]


# number, name, published train / validation / test accuracy and minutes, options. Every
# row but 2 and 16 reads the table's token: by default the book's, the last position of
# the row padded to the longest training message (--token-position last).
_ROWS = [
    (1, "defaults (124M, last block, last token)", (96.63, 99.33, 95.00, 0.28), ""),
    (2, "first token instead of last", (78.46, 80.54, 75.00, 0.28), "--token-position first"),
    (3, "last layer only (the head)", (78.65, 79.87, 72.00, 0.25),
        "--trainable-layers last_layer"),
    (4, "last two blocks", (98.85, 98.66, 98.33, 0.33), "--trainable-layers last_two_blocks"),
    (5, "all layers", (99.62, 96.64, 96.67, 0.69), "--trainable-layers all"),
    (6, "gpt2-medium (355M)", (87.50, 91.28, 84.67, 0.75), "--model gpt2-medium"),
    (7, "gpt2-large (774M)", (99.52, 98.66, 96.67, 1.50), "--model gpt2-large"),
    # Published validation 99.81 (sic): not a possible value with 149 messages.
    (8, "gpt2-xl (1558M)", (99.81, 99.81, 98.33, 2.83), "--model gpt2-xl"),
    (9, "gpt2-xl, all layers", (100.00, 98.66, 98.67, 8.12),
        "--model gpt2-xl --trainable-layers all"),
    (10, "random weights, all layers", (100.00, 96.64, 93.67, 0.69),
        "--weights random --trainable-layers all"),
    # The published LoRA rows scale the update by alpha alone: rank times stronger.
    (11, "LoRA rank 16, alpha 16", (100.00, 97.32, 96.67, 0.75),
        "--trainable-layers lora --lora-rank 16 --lora-alpha 16"),
    (12, "gpt2-xl, LoRA rank 16, alpha 8", (100.00, 98.66, 98.33, 5.79),
        "--model gpt2-xl --trainable-layers lora --lora-rank 16 --lora-alpha 8"),
    (13, "padded to the model's context (1024)", (83.08, 87.92, 78.33, 2.46),
        "--context-length model"),
    (14, "no padding, batch size 1", (100.00, 98.66, 98.00, 1.75), "--no-padding"),
    (15, "no padding, batch 1, accumulation 8", (99.33, 98.66, 98.33, 1.70),
        "--no-padding --accumulation-steps 8"),
    (16, "last real token (flexible)", (99.42, 98.66, 98.33, 0.30), "--token-position flexible"),
    (17, "causal mask disabled", (99.23, 98.66, 95.33, 0.29), "--disable-causal-mask"),
    # The published row 18 (an ignore_index for padding) was a no-op there: left out.
    (19, "average of the outputs (padding included)", (97.79, 99.33, 96.33, 0.32),
        "--average-embeddings"),
]  # fmt: skip


def _experiment(number: int, name: str, published: Sequence[float], options: str) -> Experiment:
    argv = shlex.split(options)
    own_token = "--token-position" in argv
    return Experiment(
        number, name, tuple(argv), published=Published(*published), reads_table_token=not own_token
    )


EXPERIMENTS: tuple[Experiment, ...] = (
    *(_experiment(*row) for row in _ROWS),
    Experiment(20, "baseline: TF-IDF + logistic regression", baseline="tfidf"),
    Experiment(21, "baseline: majority class", baseline="majority"),
)
BY_NUMBER = {row.number: row for row in EXPERIMENTS}
# The gpt2-small rows (with --weights random, the table that runs on a CPU).
SMALL_ROWS = (1, 2, 3, 4, 5, 10, 11, 13, 14, 15, 16, 17, 19)


def describe_row(
    row: Experiment, weights: str, token_position: str = "last", precision: str = "auto"
) -> str:
    """Three lines for ``--list``: number and name, command, published figures."""
    command = shlex.join(row.command(weights, token_position, precision))
    lines = [f"{row.number:>2}  {row.name}", f"    gpt-spam {command}"]
    if row.published:
        p = row.published
        lines.append(
            f"    published: train {p.train:.2f} / val {p.validation:.2f} / test {p.test:.2f} %,"
            f" {p.minutes:.2f} min (A100, {row.published_weights} weights)"
        )
    return "\n".join(lines)


def run_experiments(
    rows: Sequence[Experiment],
    out_dir: str | Path,
    data_dir: str | Path = "data",
    weights: str = "pretrained",
    device: str = "auto",
    precision: str = "auto",
    weights_dir: str | None = None,
    save_checkpoints: bool = False,
    overrides: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
    token_position: str = "last",
) -> list[dict[str, Any]]:
    """Run ``rows`` in order, each into ``out_dir/<number>/``; skip the finished ones.

    A row is finished when its folder holds the result of the same settings on the same
    data (the split files' SHA-256, :func:`split_fingerprint`); one finished with other
    settings, or on a split that has changed since, runs again, and the log says why.
    A row whose settings equal a finished row's (row 10 is row 5 once every row starts from
    random weights) takes that row's result instead of computing it again. ``overrides``
    replace training settings of every row (tests use a tiny model). Returns the summary of
    every row in ``out_dir`` finished on the data as it is now, and writes them as
    table.md, table.csv and table.json. ``token_position`` is the token every row but 2
    and 16 reads.
    """
    # Imported when rows run: `experiments --list` and --help need no pandas.
    from ch06_classification.sources.split_files import split_fingerprint

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, row in enumerate(rows, start=1):
        command = shlex.join(row.command(weights, token_position, precision))
        if row.baseline:
            settings, key = None, {"baseline": row.baseline}
        else:
            settings = row_settings(
                row, weights, data_dir, device, precision, weights_dir, token_position
            )
            settings = dataclasses.replace(settings, **(overrides or {}))
            # As it reads back from JSON. Whether the frozen blocks' output was loaded or
            # computed changes nothing in a result: rows finished either way are the same.
            key = {k: v for k, v in settings.to_dict().items() if k != "no_cache"}
            key = json.loads(json.dumps(key))
        data = split_fingerprint(data_dir)
        done = _finished(out_dir)
        if row.number in done:
            stale = _why_not_reusable(done[row.number], key, data)
            if stale is None:
                log(f"[{index}/{len(rows)}] row {row.number}: finished earlier, skipped")
                continue
            log(f"[{index}/{len(rows)}] row {row.number}: finished earlier {stale}: runs again")
        log(f"\n[{index}/{len(rows)}] row {row.number}: {row.name}\n    gpt-spam {command}")
        same = next((s for s in done.values() if _why_not_reusable(s, key, data) is None), None)
        if same is not None:
            log(f"    the same settings as row {same['number']}: its result is reused")
            summary = {**same, "number": row.number, "name": row.name, "same_as": same["number"]}
            summary["command"], summary["published"] = command, _published(row)
        elif settings is None:
            summary = _run_baseline(row, command, data_dir, log)
        else:
            summary = _run_training(row, command, settings, save_checkpoints, out_dir, log)
        summary["settings"], summary["data"] = key, data
        (out_dir / row.folder).mkdir(parents=True, exist_ok=True)
        write_json(out_dir / row.folder / ROW_FILE, summary)
    # One table, one split: a row finished on another (before a new split) is left out.
    data = split_fingerprint(data_dir)
    finished = sorted(_finished(out_dir).values(), key=lambda s: s["number"])
    summaries = [summary for summary in finished if summary.get("data") == data]
    others = [str(summary["number"]) for summary in finished if summary not in summaries]
    if others:
        rows_named = f"{'Rows' if len(others) > 1 else 'Row'} {', '.join(others)}"
        log(
            f"{rows_named} of {out_dir} did not run on the split now in {data_dir}: left out "
            f"of the table (--rows {','.join(others)} runs them again)"
        )
    write_tables(summaries, out_dir)
    return summaries


def row_settings(
    row: Experiment,
    weights: str = "pretrained",
    data_dir: str | Path = "data",
    device: str = "auto",
    precision: str = "auto",
    weights_dir: str | None = None,
    token_position: str = "last",
) -> TrainingSettings:
    """A training row's settings: its command read by the declarations `gpt-spam train`'s
    options are built from, so what runs is exactly the row's command."""
    argv = [*row.command(weights, token_position, precision)[1:], "--data-dir", str(data_dir)]
    argv += ["--device", device]
    argv += ["--weights-dir", weights_dir] if weights_dir else []
    return settings_from_arguments(argv)


def _why_not_reusable(
    finished: Mapping[str, Any], settings: Mapping[str, Any], data: Mapping[str, str]
) -> str | None:
    """Why a finished row is not the result of ``settings`` on the split ``data`` (as a
    phrase: "on another split"), or None if it is."""
    if finished.get("data") is None:
        return "without a record of its data"  # finished before rows recorded it
    if finished["data"] != data:
        return "on another split (its files have changed since)"
    if finished["settings"] != settings:
        names = sorted(set(settings) | set(finished["settings"]))
        changed = [n for n in names if settings.get(n) != finished["settings"].get(n)]
        return f"with other settings ({', '.join(changed)})"
    return None


def _finished(out_dir: Path) -> dict[int, dict[str, Any]]:
    summaries = (read_json(path) for path in sorted(out_dir.glob(f"*/{ROW_FILE}")))
    return {summary["number"]: summary for summary in summaries}


def _run_training(
    row: Experiment,
    command: str,
    settings: TrainingSettings,
    save_checkpoints: bool,
    out_dir: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    # Imported when a row trains: --list and --help need none of the training code.
    from ch06_classification.finetuning import finetune
    from ch06_classification.storage.runs import save_training_run

    start = time.perf_counter()
    result = finetune.fine_tune(settings, log=lambda line: log(f"    {line}"))
    save_training_run(result, out_dir / row.folder, save_checkpoint=save_checkpoints)
    seconds = time.perf_counter() - start
    return _summary(
        row,
        command,
        {split: 100 * value for split, value in result.accuracies.items()},
        result.metrics["test"]["f1"],
        seconds,
        result.train_seconds,
        result.path,
        result.device,
    )


def _run_baseline(
    row: Experiment, command: str, data_dir: str | Path, log: Callable[[str], None]
) -> dict[str, Any]:
    # Imported when a baseline row runs (scikit-learn's evaluation with it).
    from ch06_classification.extras.baseline import run_baseline

    result = run_baseline(row.baseline or "", data_dir, log=lambda line: log(f"    {line}"))
    accuracy = {
        split: 100 * result.metrics[split].accuracy for split in ("train", "validation", "test")
    }
    return _summary(
        row,
        command,
        accuracy,
        result.metrics["test"].f1,
        result.seconds,
        result.train_seconds,
        "scikit-learn",
        "cpu",
    )


def _summary(
    row: Experiment,
    command: str,
    accuracy: Mapping[str, float],
    test_f1: float,
    seconds: float,
    train_seconds: float,
    path: str,
    device: str,
) -> dict[str, Any]:
    return {
        "number": row.number,
        "name": row.name,
        "command": command,
        "train": round(accuracy["train"], 2),
        "validation": round(accuracy["validation"], 2),
        "test": round(accuracy["test"], 2),
        "test_f1": round(test_f1, 4),
        "minutes": round(seconds / 60, 2),
        "training_minutes": round(train_seconds / 60, 2),
        "path": path,
        "device": device,
        "published": _published(row),
        "same_as": None,
    }


def _published(row: Experiment) -> dict[str, float] | None:
    return dataclasses.asdict(row.published) if row.published else None


COLUMNS = ("#", "setting", "train", "val", "test", "test F1", "min", "path", "device", "published")


def _cells(summary: Mapping[str, Any]) -> list[str]:
    published = summary.get("published")
    shown = (
        f"{published['train']:.2f} / {published['validation']:.2f} / {published['test']:.2f}"
        if published
        else ""
    )
    same = f" (= row {summary['same_as']})" if summary.get("same_as") else ""
    return [
        str(summary["number"]),
        summary["name"] + same,
        f"{summary['train']:.2f}",
        f"{summary['validation']:.2f}",
        f"{summary['test']:.2f}",
        f"{summary['test_f1']:.3f}",
        f"{summary['minutes']:.2f}",
        summary["path"],
        summary["device"],
        shown,
    ]


def markdown_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """Accuracies in percent; published: the book's train / val / test (on an A100, from
    pretrained weights but row 10's)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(summary)) + " |" for summary in summaries]
    return "\n".join(lines)


def write_tables(summaries: Sequence[Mapping[str, Any]], out_dir: Path) -> None:
    """table.md, table.csv and table.json in ``out_dir``, each written atomically."""
    with atomic_output(out_dir / f"{TABLE_NAME}.md") as temporary:
        temporary.write_text(markdown_table(summaries) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows(_cells(summary) for summary in summaries)
    with atomic_output(out_dir / f"{TABLE_NAME}.csv") as temporary:
        temporary.write_text(buffer.getvalue())
    write_json(out_dir / f"{TABLE_NAME}.json", list(summaries))
