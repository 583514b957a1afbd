from .whitening import Centring, PCAWhitening, l2_normalize, transform_from

__all__ = ["Centring", "PCAWhitening", "l2_normalize", "transform_from"]
