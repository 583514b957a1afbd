"""Trained DELF attention shipped with the package (made by benchmarks/train_shipped.py)."""
