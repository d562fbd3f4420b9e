"""``python -m ch06_classification`` is the ``gpt-spam`` command."""

from ch06_classification.cli.main import console_main

console_main()
