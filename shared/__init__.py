"""Code both the edge and the cloud need: the model, the split, privacy, the wire format and adapters."""
