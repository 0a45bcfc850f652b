"""The cloud consumer daemon: ingest feature batches, train the YOLOv5 head round by round, publish models."""
