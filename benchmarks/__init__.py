"""Benchmarks: how fast the package runs on this machine, and how far from its limits.

Not part of the installed package: ``python scripts/benchmark.py`` (``make benchmark``)
runs every benchmark module listed there. A benchmark module has ``add_arguments(parser)``
for its own options and ``run(args, data_dir) -> dict`` that measures, prints a report and
returns its figures; it measures the package through its ordinary entry points (the
``gpt-spam`` commands, or public functions called in a fresh ``python -c`` process), one
process per measurement, so each has its own start-up time and peak memory.
"""
