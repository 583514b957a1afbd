"""Reading PyTorch files a user names, safely: tensors and plain containers only; and the
package's own checksummed weights files (a trained head, tuned backbone stages, a
trained keypoint attention)."""
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


def save_weights_file(path: str | os.PathLike, fmt: str, state: dict, fields: dict, half: bool = True
                      ) -> tuple[dict, str]:
    """Write ``torch.save`` of ``{"format": fmt, **fields, "state", "digest"}`` atomically: the
    state's tensors on the CPU, contiguous, floating ones in float16 when ``half`` (figures
    reported for a shipped file are measured with these rounded weights), and the sha256 of
    the state as stored (``imret.core.digest.weights_digest``). Returns (state, digest)."""
    import torch

    from ..core.atomic import atomic_write
    from ..core.digest import weights_digest

    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in state.items()}
    digest = weights_digest(state)
    content = {"format": fmt, **fields, "state": state, "digest": digest}
    atomic_write(os.fspath(path), lambda tmp: torch.save(content, tmp))
    return state, digest


def load_weights_file(path: str | os.PathLike, fmt: str, what: str, readable_as: str, foreign: str,
                      required: tuple[str, ...] = (), digest_required: bool = True) -> dict:
    """The content of a file ``save_weights_file`` wrote with format ``fmt``: a file of
    another format is a ``WeightsError`` saying ``foreign``; one without its state or a
    ``required`` field, or whose state no longer matches its digest, a ``WeightsError``
    saying so. ``digest_required=False`` reads a file written before its kind carried a
    digest (the digest is still checked when there is one)."""
    from ..core.digest import weights_digest

    obj = load_torch_file(path, what, readable_as)
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise WeightsError(path, foreign)
    missing = [k for k in ("state", *required) if k not in obj]
    if missing or not isinstance(obj["state"], dict):
        raise WeightsError(path, f"damaged {readable_as}: no {', '.join(missing) or 'state of tensors'} in it")
    if "digest" not in obj:
        if digest_required:
            raise WeightsError(path, f"damaged {readable_as}: no digest of its weights in it")
    elif weights_digest(dict(obj["state"])) != obj["digest"]:
        raise WeightsError(path, "weights do not match their digest (file altered or damaged)")
    return obj
