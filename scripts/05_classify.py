"""Step 5: classify new messages with the latest trained run.

    python scripts/05_classify.py "You are a winner! Claim your prize now"
    python scripts/05_classify.py --file inbox.txt --json
    cat inbox.txt | python scripts/05_classify.py -

Prints each message's label and spam probability, in the order given. The same as
`gpt-spam classify`; run with --help for every option.
"""

from ch06_classification.cli.main import run_step

if __name__ == "__main__":
    run_step("classify")
