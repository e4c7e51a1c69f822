"""The version, read by hatch at build time: ``importlib.metadata`` costs 40 ms at every start."""

__version__ = "0.1.0"
