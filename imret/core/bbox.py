"""The query crop box as text (``x0,y0,x1,y1`` in pixels), parsed the same way by the CLI
and the service."""
from __future__ import annotations

import math

from .errors import ConfigError


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``'x0,y0,x1,y1'`` → a tuple of floats; ConfigError naming the text otherwise."""
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise ConfigError(f"bbox must be x0,y0,x1,y1 numbers, got {text!r}") from None
    if len(vals) == 4 and not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"bbox must be four finite numbers x0,y0,x1,y1, got {text!r}")
    if len(vals) != 4 or vals[2] <= vals[0] or vals[3] <= vals[1]:
        raise ConfigError(f"bbox must be x0,y0,x1,y1 with x1>x0 and y1>y0, got {text!r}")
    return vals  # type: ignore[return-value]
