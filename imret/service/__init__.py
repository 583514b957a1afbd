"""HTTP service: ``imret serve my.index`` (FastAPI app from ``create_app``)."""
from .app import create_app

__all__ = ["create_app"]
