"""Step 4: evaluate the latest trained run on every split (accuracy and beyond).

Prints precision, recall, F1, ROC-AUC and more on train, validation, test, the test
messages the run never saw in training, and a realistic-prevalence set; saves
evaluation-<data>-t<threshold>.json and plots in the run folder. The same as
`gpt-spam evaluate`; run with --help for every option.
"""

from ch06_classification.cli.main import run_step

if __name__ == "__main__":
    run_step("evaluate")
