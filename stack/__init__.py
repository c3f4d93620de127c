"""stack: secrets, service discovery and scheduling in one process."""

__version__ = "0.1.0"
