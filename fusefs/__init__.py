"""fusefs: mount any Git revision of a DVC repository as a lazy, verified directory tree."""

__version__ = "0.1.0"
