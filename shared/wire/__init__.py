"""Wire contracts between edges, cloud and operators: names, feature batches, events, control messages."""
