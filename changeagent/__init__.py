"""changeagent: remote-sensing change understanding (change mask + change caption) in one model."""

__version__ = "0.1.0"
