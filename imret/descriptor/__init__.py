from .whitening import Centring, PCAWhitening, Transform, kind_of, l2_normalize, learn, transform_from

__all__ = ["Centring", "PCAWhitening", "Transform", "kind_of", "l2_normalize", "learn", "transform_from"]
