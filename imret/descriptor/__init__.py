from .whitening import PCAWhitening, l2_normalize

__all__ = ["PCAWhitening", "l2_normalize"]
