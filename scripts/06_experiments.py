"""Step 6: the chapter's bonus experiments, one `gpt-spam train` command per table row.

The same as `gpt-spam experiments`; e.g. the gpt2-small rows from random weights, offline:

    python scripts/06_experiments.py --rows 1,2,3,4,5,10,11,13,14,15,16,17,19,20,21 \
        --weights random --sms-source path/to/sms_spam_collection.zip

--list shows every row's command and the published figures; run with --help for more.
"""

from ch06_classification.cli.main import run_step

if __name__ == "__main__":
    run_step("experiments")
