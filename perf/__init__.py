"""The meow_async benchmark harness (``python -m perf --help``)."""
