"""The operator's side: the ``meow-async`` command (``main.py``) and what it reads and sends:
job listings, the status of a runner, the ports it listens on, ``send``, the docs' addresses."""
