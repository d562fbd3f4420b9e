"""``gpt-spam experiments``: the chapter's bonus experiments, a table of one command per row."""

from __future__ import annotations

import argparse
from pathlib import Path

from ch06_classification.cli.options import (
    PRECISION_HELP,
    add_data_dir_option,
    add_device_option,
    add_precision_option,
    add_sms_source_option,
    add_weights_dir_option,
    add_weights_option,
)


def _row_numbers(value: str) -> list[int]:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.extras.experiments import BY_NUMBER

    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        numbers = []
    unknown = [n for n in numbers if n not in BY_NUMBER]
    if not numbers or unknown:
        known = ", ".join(map(str, BY_NUMBER))
        raise argparse.ArgumentTypeError(f"expected row numbers among {known}, e.g. 1,2,16")
    return numbers


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiments",
        help="run the book's bonus experiments (and baselines) as one resumable table",
        description=(
            "The chapter's bonus experiments: each row is one `gpt-spam train` command (or a "
            "classical baseline) run into its own folder under --out-dir. Finished rows are "
            "skipped, so an interrupted table resumes. Prints the table as Markdown and "
            "writes table.md, table.csv and table.json. --list shows every row's command and "
            "the published figures."
        ),
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--list", action="store_true", help="print every row and exit")
    which.add_argument(
        "--rows", type=_row_numbers, metavar="N,N,...", help="the rows to run, e.g. 1,2,16"
    )
    which.add_argument("--all", action="store_true", help="run every row")
    add_weights_option(
        parser,
        help=(
            "what every row starts from (row 10 always from random weights); the gpt2-small "
            "rows from random weights run on a CPU without any download (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--token-position",
        choices=["last", "flexible"],
        default="last",
        help=(
            "the token every row but 2 and 16 reads: the book's last position of the padded "
            "row, so that the rows compare with the published ones, or the last real token "
            "(this project's default), with which padding costs nothing and rows 5, 11 and 13 "
            "run several times faster (default: %(default)s)"
        ),
    )
    add_weights_dir_option(parser)
    add_data_dir_option(parser)
    add_sms_source_option(parser)
    add_device_option(parser)
    add_precision_option(parser, help=f"for every row, as in train: {PRECISION_HELP}")
    parser.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help=(
            "where the rows' folders and the tables go (default: runs/experiments/<weights>, "
            "or runs/experiments/<weights>-flexible)"
        ),
    )
    parser.add_argument(
        "--save-checkpoints",
        action="store_true",
        help="also save each row's model.safetensors (default: only figures and plots)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.extras.experiments import BY_NUMBER, EXPERIMENTS, describe_row

    if args.list:
        listing = (
            describe_row(row, args.weights, args.token_position, args.precision)
            for row in EXPERIMENTS
        )
        print("\n\n".join(listing))
        return 0
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.extras.experiments import markdown_table, run_experiments

    rows = EXPERIMENTS if args.all else [BY_NUMBER[number] for number in args.rows]
    ensure_splits(args.data_dir, args.sms_source)
    table = args.weights + ("" if args.token_position == "last" else f"-{args.token_position}")
    out_dir = args.out_dir or Path("runs") / "experiments" / table
    summaries = run_experiments(
        rows,
        out_dir,
        args.data_dir,
        weights=args.weights,
        device=args.device,
        precision=args.precision,
        weights_dir=args.weights_dir,
        save_checkpoints=args.save_checkpoints,
        token_position=args.token_position,
    )
    print(
        f"\nEvery finished row in {out_dir}/ (accuracy in %; published: the book's, on an "
        "A100, from pretrained weights but row 10's):\n"
    )
    print(markdown_table(summaries))
    print(f"\nSaved table.md, table.csv and table.json in {out_dir}/")
    return 0


def ensure_splits(data_dir: Path, sms_source: str | None) -> None:
    """Download (or copy from ``sms_source``) and split the SMS collection, unless the data
    folder holds a whole split of it already. A split of other data there is never
    replaced: the rows use it if it is whole and ``--sms-source`` does not ask for the SMS
    collection; otherwise the command stops, naming it."""
    # Imported when this runs: gpt-spam builds every step's parser at start (cold start).
    from ch06_classification.cli.commands import download, split
    from ch06_classification.cli.prerequisites import other_split_problem, require
    from ch06_classification.cli.running import build_parser, run_command
    from ch06_classification.sources.split_files import missing_split_files, split_origin
    from gpt.errors import UserFacingError

    origin = split_origin(data_dir)
    whole = origin is not None and not missing_split_files(data_dir)
    if origin is not None and not origin.is_of("sms"):
        if whole and sms_source is None:
            print(f"The rows use the split in {data_dir} (of {origin.describe()})")
            return
        require(other_split_problem(data_dir, "sms"))
    if whole:
        return
    source = ["--sms-source", sms_source] if sms_source else []
    # Only the dataset here: each row fetches the weights of its own model when it starts.
    for argv in (["download", "--data-dir", str(data_dir), "--weights", "random", *source],
                 ["split", "--data-dir", str(data_dir)]):  # fmt: skip
        print(f"=== gpt-spam {' '.join(argv)}")
        if run_command(build_parser([download, split]), argv):
            raise UserFacingError(f"`gpt-spam {argv[0]}` failed; see above")
