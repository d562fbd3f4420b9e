"""The notebooks: saved with the outputs of an offline run of this code, holding no package
code, and running top to bottom.

Each notebook is committed with the outputs of a run offline on a CPU (``make
notebooks-run``, ``scripts/run_notebooks.py``), which records the SHA-256 of the code it ran
on: a test holds it equal to the code's as it is now. Every notebook is also executed here
with ``nbclient`` in CI mode (``GPT_SPAM_NOTEBOOK_MODE=ci``: a tiny GPT-2 with random
weights, one epoch, the dataset from ``SMS_SPAM_SOURCE``, every file in a temporary folder,
an empty home and no tokenizer cache), so the notebooks cannot drift away from the package
they import, and the cells whose outputs do not depend on the model (the data, the tokens:
tagged ``same-in-every-mode``) must print what the committed run printed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scripts.run_notebooks import METADATA_KEY, code_sha256, execute, notebook_env
from tests.sms_data import real_dataset

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = ["ch06_exercises", "ch06_main", "ch06_pitfalls", "ch06_solutions"]
PACKAGES = ("gpt", "ch06_classification")

# A notebook may define a tiny helper (a line or three); anything longer is logic that
# belongs in the package, where it is tested, not in a notebook.
MAX_DEFINITION_LINES = 3
CELL_TIMEOUT_S = 300
SAME_IN_EVERY_MODE = "same-in-every-mode"  # the tag of a cell whose output is the data's


def read(path: Path):
    return nbformat.read(path, as_version=4)


def code_cells(path: Path) -> list:
    return [cell for cell in read(path).cells if cell.cell_type == "code"]


def python_source(cell) -> str:
    """A code cell's source without IPython-only lines (magics and shell escapes)."""
    lines = cell.source.splitlines()
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


def package_names() -> set[str]:
    """Every function and class defined at the top level of the package's modules."""
    names = set()
    for package in PACKAGES:
        for module in (ROOT / package).rglob("*.py"):
            tree = ast.parse(module.read_text(encoding="utf-8"))
            names |= {
                node.name
                for node in tree.body
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            }
    return names


def ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


def test_the_chapter_notebooks_are_there():
    assert [path.stem for path in NOTEBOOKS] == EXPECTED


def printed(cell) -> str:
    """What a code cell printed or returned, as text (figures left out)."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_committed_with_the_outputs_of_an_offline_run(path: Path):
    """Every cell ran, in order, in one offline run, without an error or a local path."""
    notebook = read(path)
    nbformat.validate(notebook)
    record = notebook.metadata.get(METADATA_KEY, {})
    assert record.get("mode") == "offline", f"{path.name}: run `make notebooks-run`"
    cells = code_cells(path)
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1)), (
        f"{path.name}: not run top to bottom in one go: run `make notebooks-run`"
    )
    assert printed(cells[0]).startswith("offline mode: GPT-2 small (124M) from random weights")
    for index, cell in enumerate(notebook.cells):
        where = f"{path.name}, cell {index}"
        assert "execution" not in cell.metadata, f"{where} has execution timing metadata"
        if cell.cell_type != "code":
            continue
        assert not [o for o in cell.outputs if o.output_type == "error"], f"{where} failed"
        assert str(ROOT) not in printed(cell), f"{where} prints a folder of this machine"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_committed_outputs_came_from_this_code(path: Path):
    """The chapter core and the fast path are the code the committed run ran on (see
    ``CODE_FILES`` in scripts/run_notebooks.py): changed since, the outputs are stale."""
    recorded = read(path).metadata.get(METADATA_KEY, {}).get("code_sha256")
    assert recorded == code_sha256(), (
        f"{path.name}: its outputs came from other code than this checkout's: run "
        '`make notebooks-run ARGS="--sms-source path/to/sms_spam_collection.zip"`'
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_first_code_cell_is_the_parameters_cell(path: Path):
    first = code_cells(path)[0]
    assert "parameters" in first.metadata.get("tags", []), f"{path.name}: tag it 'parameters'"
    assert "GPT_SPAM_NOTEBOOK_MODE" in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_no_package_code_in_notebooks(path: Path):
    """Notebooks import the package; they do not define (or redefine) its functions."""
    ours = package_names()
    for index, cell in enumerate(code_cells(path)):
        tree = ast.parse(python_source(cell), filename=f"{path.name}, cell {index}")
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            where = f"{path.name}, cell {index}: {node.name}"
            assert node.name not in ours, f"{where} redefines a function of the package"
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_DEFINITION_LINES, f"{where}: {lines} lines, move it to the package"


def test_exercise_cells_are_left_to_the_reader():
    exercises = NOTEBOOKS_DIR / "ch06_exercises.ipynb"
    solutions = NOTEBOOKS_DIR / "ch06_solutions.ipynb"
    tasks = [cell for cell in code_cells(exercises) if "# your code here" in cell.source]
    assert len(tasks) >= 4
    assert not any("# your code here" in cell.source for cell in code_cells(solutions))


def snapshot(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.exists() else set()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_runs_in_ci_mode(path: Path, tmp_path: Path):
    pytest.importorskip("nbclient")
    source = real_dataset()
    home = tmp_path / "home"  # nothing cached there: no tokenizer files, no weights
    home.mkdir()

    env = notebook_env(
        "ci",
        {
            "SMS_SPAM_SOURCE": str(source),
            # CI mode writes its data and runs to a temporary folder: let it be this test's.
            "TMPDIR": str(tmp_path),
            # The tiny model gains nothing from threads, and on a busy machine two threads
            # per process slow it down many times over.
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "HOME": str(home),
        },
    )
    for name in ("GPT2_WEIGHTS_DIR", "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "HF_HOME"):
        env.pop(name, None)

    watched = [ROOT / "data", ROOT / "runs", NOTEBOOKS_DIR]
    before = [snapshot(folder) for folder in watched]
    executed, seconds = execute(path, env, timeout=CELL_TIMEOUT_S)
    print(f"{path.name}: executed in {seconds:.1f} s")

    for folder, files in zip(watched, before, strict=True):
        added = sorted(str(p.relative_to(ROOT)) for p in snapshot(folder) - files)
        assert not added, f"{path.name} wrote into the repository in CI mode: {added}"
    # What the data cells print does not depend on the model: the committed run's.
    ran_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    for index, (ran, saved) in enumerate(zip(ran_cells, code_cells(path), strict=True)):
        if SAME_IN_EVERY_MODE in saved.metadata.get("tags", []):
            assert printed(ran) == printed(saved), (
                f"{path.name}, code cell {index} prints other data than its committed output: "
                "run `make notebooks-run`"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_no_path_outside_the_repository(path: Path):
    """The dataset comes through SMS_SPAM_SOURCE, as for the commands: no ../shared."""
    for index, cell in enumerate(code_cells(path)):
        assert "shared" not in cell.source, f"{path.name}, cell {index}"
        assert "ROOT.parent" not in cell.source, f"{path.name}, cell {index}"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("real", ("pretrained", 5, {})),
        ("offline", ("random", 5, {})),  # full size, nothing to download
        ("ci", ("random", 1, {"emb_dim": 64, "n_layers": 2, "n_heads": 4})),
    ],
)
def test_the_parameters_of_each_mode(mode: str, expected: tuple, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GPT_SPAM_NOTEBOOK_MODE", mode)
    monkeypatch.setenv("SMS_SPAM_SOURCE", "sms_spam_collection.zip")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # CI mode makes its work folder there
    monkeypatch.chdir(NOTEBOOKS_DIR)
    shape = "a tiny GPT-2 (2 blocks of 64 dimensions)" if mode == "ci" else "GPT-2 small (124M)"
    for path in NOTEBOOKS:
        values: dict = {}
        exec(code_cells(path)[0].source, values)  # the parameters cell alone
        got = (values["WEIGHTS"], values["EPOCHS"], values["CONFIG_OVERRIDES"])
        assert (values["MODEL"], *got) == ("gpt2-small", *expected), path.name
        assert values["SMS_SOURCE"] == "sms_spam_collection.zip"
        # The mode line says what runs: the tiny model is not called gpt2-small.
        line = capsys.readouterr().out
        assert line.startswith(f"{mode} mode: {shape} from {expected[0]} weights"), line


@pytest.mark.parametrize(("cuda", "expected"), [(False, "cached"), (True, "full")])
def test_the_books_training_cell_caches_the_frozen_blocks_on_a_cpu(
    cuda: bool, expected: str, monkeypatch, capsys
):
    """On a CPU the book's training cell is given the model with its frozen blocks cached
    (an hour becomes minutes; tests/speed/test_fast_path.py holds the numbers equal); on a
    GPU, the book's model as it is. The mode line says which."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setenv("GPT_SPAM_NOTEBOOK_MODE", "offline")
    monkeypatch.chdir(NOTEBOOKS_DIR)
    values: dict = {}
    exec(code_cells(NOTEBOOKS_DIR / "ch06_main.ipynb")[0].source, values)
    assert values["BOOK_TRAINING"] == expected
    assert f"the book's training cell: {expected}" in capsys.readouterr().out
    training_cell = next(
        cell for cell in code_cells(NOTEBOOKS_DIR / "ch06_main.ipynb")
        if "train_classifier_simple(" in cell.source
    )  # fmt: skip
    assert 'cache_frozen_blocks(model) if BOOK_TRAINING == "cached" else model' in (
        training_cell.source
    )
