"""Cloud-side training of the YOLOv5 cloud part: the detection loss and what builds its targets."""
