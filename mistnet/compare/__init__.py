"""``mistnet compare``: centralised fine-tuning, MistNet at several privacy levels and FedAvg, measured alike."""
