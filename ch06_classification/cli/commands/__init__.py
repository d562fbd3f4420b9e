"""The steps of the ``gpt-spam`` command, one module each (``cli.STEPS`` lists them in order).

Each module has ``register(subparsers)``, which adds its subcommand and sets ``run``;
``options`` declares the options several steps share, ``running`` parses and runs a step.
"""
