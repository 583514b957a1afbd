"""Re-ranking specs as text ('dba:k=5,aqe:n=3,alpha=3') → the registered step values.

At the bottom of the package, beside the ``STEPS`` registry, so that a ``Preset`` (whose
``rerank`` field is such a text) validates it without importing the re-ranking layer:
the registry imports the step modules on first lookup. ``imret.rerank`` re-exports
``make_step`` and ``parse_steps``.
"""
from __future__ import annotations

import dataclasses
import math
import typing

from .errors import ConfigError
from .registry import STEPS


def _convert(cls: type[Step], key: str, text: str):
    """A parameter's text → its declared type (int, float, tuple of floats, or None)."""
    hint = typing.get_type_hints(cls)[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional and text.lower() == "none":
        return None
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    try:
        if base is str:
            return text
        if base is int:
            return int(text)
        if base is float:
            v = float(text)
            if not math.isfinite(v):
                raise ValueError
            return v
        if typing.get_origin(base) is tuple:
            return tuple(float(x) for x in text.split("/"))
    except ValueError:
        kind = {int: "an integer", float: "a number"}.get(base, "numbers separated by '/'")
        raise ConfigError(f"{cls.name}: {key} must be {kind}, got {text!r}") from None
    raise TypeError(f"{cls.__name__}.{key}: unsupported parameter type {hint}")


def make_step(name: str, params: dict[str, str] | None = None) -> Step:
    """A step by registered name, from text parameters (as the command line gives them)."""
    if name not in STEPS:
        raise ConfigError(f"unknown re-ranking step {name!r}; known: {', '.join(STEPS.names())}")
    cls = STEPS.get(name)
    allowed = [f.name for f in dataclasses.fields(cls)]
    params = params or {}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"{name}: unknown parameter {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}")
    return cls(**{k: _convert(cls, k, v) for k, v in params.items()})


def parse_steps(spec: str) -> tuple[Step, ...]:
    """'dba:k=5,aqe:n=3,alpha=3' → (DBA(k=5), AlphaQE(n=3, alpha=3.0)).

    Comma-separated tokens: ``name`` or ``name:key=value`` starts a step, a lone
    ``key=value`` adds a parameter to the step before it. Tuple values use '/'."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty re-ranking spec; give steps such as 'aqe' or 'dba:k=5,aqe:n=3,alpha=3'")
    raw: list[tuple[str, dict[str, str]]] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            raise ConfigError(f"empty item in re-ranking spec {spec!r}")
        name, sep, param = token.partition(":")
        if "=" in name:  # a parameter of the step before
            if sep or not raw:
                raise ConfigError(f"{token!r} in {spec!r}: a parameter must follow a step name, as in 'aqe:n=3'")
            name, param = "", token
        else:
            name = name.strip().lower()
            if not name:
                raise ConfigError(f"{token!r} in {spec!r}: missing step name before ':'")
            raw.append((name, {}))
            if sep and not param.strip():
                raise ConfigError(f"{token!r} in {spec!r}: nothing after ':'")
        if param:
            key, eq, value = (x.strip() for x in param.partition("="))
            if not eq or not key or not value:
                raise ConfigError(f"{param!r} in {spec!r}: parameters are key=value")
            step_name, params = raw[-1]
            if key in params:
                raise ConfigError(f"{step_name}: parameter {key!r} given twice in {spec!r}")
            params[key] = value
    return tuple(make_step(n, p) for n, p in raw)


def check_order(steps) -> None:
    """ConfigError unless ``steps`` has at most one database step (dba), and it first: it
    changes the database before the search, which the other steps re-rank."""
    stages = [s.stage for s in steps]
    text = ",".join(s.spec() for s in steps)
    if stages.count("database") > 1:
        raise ConfigError(f"at most one database step (dba) per pipeline, got {text}")
    if "database" in stages[1:]:
        raise ConfigError(f"dba changes the database before the search, so it must come first: {text}")
