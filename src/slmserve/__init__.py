"""slmserve: a fast, concurrent server for small language models."""

__version__ = "0.1.0"
