"""``python -m ch06_classification`` is the ``gpt-spam`` command."""

import sys

from ch06_classification.cli import main

sys.exit(main())
