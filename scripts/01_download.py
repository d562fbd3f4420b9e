"""Step 1: download the SMS Spam Collection and check that it is complete.

Same as ``gpt-spam download``: writes ``data/SMSSpamCollection.tsv``. Offline, pass the
zip you have with ``--sms-source PATH`` (or set ``SMS_SPAM_SOURCE``). ``--help`` lists
the options.
"""

from ch06_classification.cli.main import run_step

if __name__ == "__main__":
    run_step("download")
