"""Fine-tuned backbone stages shipped with the package (made by benchmarks/train_shipped.py)."""
