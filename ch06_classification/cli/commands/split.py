"""``gpt-spam split``: balance the collection (or your own labelled texts) and write the
training/validation/test CSVs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, NamedTuple

from ch06_classification.cli.options import (
    add_data_dir_option,
    add_dataset_option,
    add_seed_option,
    add_split_options,
)
from gpt.errors import UserFacingError

if TYPE_CHECKING:
    import pandas as pd

    from ch06_classification.sources.split_files import Balance, Dataset, SplitMethod


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "split",
        help="balance the collection (or your own labelled texts) and split it into CSVs",
        description=(
            "Keep all spam messages and as many random ham ones, split them 70/10/20, and "
            "write train.csv, validation.csv, test.csv, test_realistic.csv (spam as rare as "
            "in the whole collection) and split_report.json to the data folder. With --csv "
            "or --tsv, split your own labelled texts instead (any number of classes, "
            "stratified 70/10/20, unbalanced by default); split_report.json records the "
            "class names (id2label) for training, evaluation and classification."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``split``, which ``pipeline`` accepts and passes on too."""
    add_data_dir_option(parser)
    add_dataset_option(parser)
    add_seed_option(parser)
    add_split_options(parser)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `gpt-spam --help` does not load pandas.
    from ch06_classification.cli.options import parse_fractions
    from ch06_classification.cli.prerequisites import dataset_problem, own_texts_problem, require
    from ch06_classification.sources.split_files import DEFAULT_FRACTIONS, write_splits
    from ch06_classification.storage.datafiles import SPLIT_FILES, SPLIT_REPORT
    from ch06_classification.storage.safe_files import claim_folder

    own_file = args.csv or args.tsv
    if own_file is not None and args.dataset is not None:
        raise UserFacingError("give --dataset or your own --csv/--tsv file, not both")
    if own_file is None:
        require(dataset_problem(args.data_dir, args.dataset or "sms"))
    else:
        require(own_texts_problem(args, read=False))  # read below, while the folder is held
    fractions = parse_fractions(args.fractions) if args.fractions else DEFAULT_FRACTIONS
    # The folder is held from before the texts are read until their split is written: a
    # second split into it meanwhile is refused, instead of both saying "Wrote" and one
    # silently replacing the other's split.
    with claim_folder(args.data_dir):
        texts = read_texts(args)
        report = write_splits(
            texts.df,
            args.data_dir,
            args.seed,
            args.dedupe,
            class_names=texts.class_names,
            fractions=fractions,
            balance=args.balance or texts.balance,
            method=args.split_method or texts.method,
            dataset=texts.dataset,
            source=str(own_file) if own_file is not None else None,
        )
    print(format_report(report))
    written = [name for name in SPLIT_FILES.values() if name in report["files"]]
    print(f"Wrote {', '.join([*written, SPLIT_REPORT])} to {args.data_dir}")
    return 0


class Texts(NamedTuple):
    """The texts to split (``Label`` holds class names), what they are, and how they are
    split unless the options say otherwise."""

    df: pd.DataFrame
    class_names: tuple[str, ...]
    dataset: Dataset
    balance: Balance
    method: SplitMethod


def read_texts(args: argparse.Namespace) -> Texts:
    """The texts ``split``'s options name: the SMS collection, the IMDB reviews, or yours."""
    if args.dataset == "imdb":
        # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
        from ch06_classification.sources.imdb import IMDB_CLASS_NAMES, load_imdb

        # The bonus's two shuffles with the seed, and its cut: 35,000 / 5,000 / 10,000.
        df = load_imdb(args.data_dir, args.seed)
        return Texts(df, IMDB_CLASS_NAMES, "imdb", "none", "random")
    own_file = args.csv or args.tsv
    if own_file is None:
        # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
        from ch06_classification.classifier import CLASS_NAMES
        from ch06_classification.sources.sms import load_sms_spam

        # The book's: balanced by undersampling, one shuffle for everything.
        return Texts(load_sms_spam(args.data_dir), CLASS_NAMES, "sms", "undersample", "random")
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.sources.labelled_texts import class_names_of, read_labelled_texts

    fmt = "csv" if args.csv else "tsv"
    df = read_labelled_texts(own_file, args.text_column, args.label_column, fmt)
    return Texts(df, class_names_of(df["Label"]), "own", "none", "stratified")


def format_report(report: dict[str, Any]) -> str:
    """The split report as a few lines of text for the terminal."""
    collection = report["collection"]
    balanced = "balanced" in report
    used = report["balanced" if balanced else "used"]
    lines = [
        f"Collection: {collection['rows']:,} texts ({describe_classes(collection['classes'])}), "
        f"{collection['distinct_texts']:,} distinct texts",
        f"{'Balanced' if balanced else 'Used'}"
        f"{' after dropping repeated texts' if report['dedupe'] else ''}: "
        f"{used['rows']:,} texts ({describe_classes(used['classes'])}), "
        f"{used['distinct_texts']:,} distinct texts",
        f"Splits (seed {report['seed']}"
        + (f", {report['method']}" if "method" in report else "")
        + "):",
    ]
    for name, split in report["splits"].items():
        line = (
            f"  {name:<15}{split['rows']:>6,} rows ({describe_classes(split['classes'], True)}), "
            f"{split['distinct_texts']:,} distinct texts"
        )
        if "seen_in_training" in split:
            by_class = {k: v for k, v in split["seen_in_training_by_class"].items() if v}
            line += f", {split['seen_in_training']:,} seen in training" + (
                f" ({describe_classes(by_class)})" if by_class else ""
            )
        lines.append(line)
    if not report["dedupe"] and report["splits"]["test"]["seen_in_training"]:
        lines.append(
            "Rows seen in training flatter validation and test accuracy; "
            "--dedupe removes repeated texts before splitting."
        )
    return "\n".join(lines)


def describe_classes(counts: dict[str, int], shares: bool = False, shown: int = 6) -> str:
    """E.g. ``4,827 ham, 747 spam``, with each class's share if ``shares``; the first
    ``shown`` classes of many, then how many more. A class is named as the data names it,
    on one line and with no control character (``printable.one_line``)."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.storage.printable import NAME_WIDTH, one_line

    total = sum(counts.values()) or 1
    parts = [
        f"{count:,} {one_line(name, NAME_WIDTH)}" + (f" {count / total:.1%}" if shares else "")
        for name, count in list(counts.items())[:shown]
    ]
    if len(counts) > shown:
        parts.append(f"{len(counts) - shown} more classes")
    return ", ".join(parts)
