"""Step 3: fine-tune GPT-2 as a spam classifier (the book's section 6.7).

Trains the last transformer block, the final LayerNorm and a new 2-class head for 5 epochs,
then saves the checkpoint, metrics, history and loss/accuracy plots in runs/<timestamp>/.
The same as `gpt-spam train`; run with --help for every option.
"""

from ch06_classification.cli.main import run_step

if __name__ == "__main__":
    run_step("train")
