"""Step 2: balance the collection and split it into training, validation and test sets.

Same as ``gpt-spam split``: writes ``train.csv``, ``validation.csv``, ``test.csv``,
``test_realistic.csv`` and ``split_report.json`` to ``data/``, and prints how many
validation and test messages also occur in training. ``--help`` lists the options.
"""

from ch06_classification.cli.main import run_step

if __name__ == "__main__":
    run_step("split")
