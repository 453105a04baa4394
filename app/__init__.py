"""tierstream: real-time customer tiering on Kafka."""

__version__ = "0.1.0"
