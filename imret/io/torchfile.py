"""Reading PyTorch files a user names, safely: tensors and plain containers only."""
from __future__ import annotations

import os
from typing import Any

from ..core.errors import WeightsError


def load_torch_file(path: str | os.PathLike, what: str, readable_as: str | None = None) -> Any:
    """The content of a ``torch.save`` file, unpickled with ``weights_only=True`` (no
    arbitrary objects), on the CPU. A missing or unreadable file is a ``WeightsError``
    naming the file, ``what`` it should have been (``readable_as`` when unreadable), and why."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(path, f"no such {what} file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or broken files
        raise WeightsError(path, f"not a readable {readable_as or what} ({type(exc).__name__}: {exc})") from None
