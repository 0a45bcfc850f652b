"""YOLOv5 v6.x in plain torch: the declarative table, its blocks, the split and the weight formats."""
