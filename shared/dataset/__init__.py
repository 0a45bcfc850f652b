"""Labelled images in YOLO layout: discovery, label parsing, YOLOv5 letterboxing and batching."""
