"""Detection evaluation as YOLOv5 v6.1 ``val.py`` does it: non-max suppression, matching and mAP."""
