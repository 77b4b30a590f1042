"""Experiments: single runs (train, evaluate), the paper's protocol, comparisons, the demo."""
