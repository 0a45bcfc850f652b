"""mistnet: privacy-preserving split training of YOLOv5 over a message queue."""

__version__ = "0.1.0"
