"""``mistnet bench``: the performance bars of DESIGN §9, each measured as a ratio side by side in one run."""
