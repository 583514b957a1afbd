"""What a request must pass before the service reads its body.

``RequestGuard`` is an ASGI middleware in front of the app:

* the ``Host`` header must name one of the hosts the server answers to (a page on
  another site that rebinds its DNS name to 127.0.0.1 sends its own name, and is
  refused instead of reading the photos);
* a write (``POST /index/add``, ``DELETE /index/…``) must carry the token: checked on
  the headers, so an unauthorised upload is refused before a byte of it is read;
* a body may not be larger than its route allows: refused on ``Content-Length`` up
  front, and counted as it streams (chunked uploads) so that reading stops at the cap.
"""
from __future__ import annotations

import hmac
import json
import threading

from fastapi import HTTPException

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small form fields around the files
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def allowed_hosts_for(bind_host: str, extra=()) -> tuple[str, ...]:
    """The Host names a server bound to ``bind_host`` answers to: the loopback names and the
    bound address, plus ``extra`` (``--allowed-hosts``; '*' allows any). Bound to every
    interface with no ``extra``, any name is allowed (there is no name to check against)."""
    extra = tuple(h.strip().lower() for h in extra if h.strip())
    if bind_host in WILDCARD_BINDS and not extra:
        return ("*",)
    host = bind_host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return tuple(dict.fromkeys(LOOPBACK_HOSTS + ((host,) if bind_host not in WILDCARD_BINDS else ()) + extra))


def _host_name(value: str) -> str:
    """'example.org:8000' → 'example.org'; '[::1]:8000' → '[::1]'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[:value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def token_problem(token: str | None, authorization: str | None) -> tuple[int, str] | None:
    """(status, message) when a write with ``authorization`` must be refused, else None."""
    if token is None:
        return 403, "this service is read-only: start it with --token to allow changes"
    expected = f"Bearer {token}"
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected.encode()):
        return 401, "missing or wrong token (send 'Authorization: Bearer TOKEN')"
    return None


def is_write(method: str, path: str) -> bool:
    return (method == "POST" and path == "/index/add") or (method == "DELETE" and path.startswith("/index/"))


class RequestGuard:
    """The checks of the module docstring; ``body_cap(method, path)`` gives a route's body limit."""

    def __init__(self, app, token: str | None, allowed_hosts, body_cap):
        self.app = app
        self.token = token
        self.allowed = {h.lower() for h in allowed_hosts}
        self.body_cap = body_cap

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = _host_name(headers.get("host", ""))
        if "*" not in self.allowed and host not in self.allowed:
            return await _reply(send, 400, f"Host {host or '(none)'!r} is not a name this service answers to "
                                           "(start it with --allowed-hosts to add one)")
        method, path = scope["method"], scope["path"]
        if is_write(method, path):
            problem = token_problem(self.token, headers.get("authorization"))
            if problem:
                return await _reply(send, *problem)
        cap = self.body_cap(method, path)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await _reply(send, 400, "bad Content-Length")
            if int(length) > cap:
                return await _reply(send, 413, f"request body of {int(length):,} bytes is over the upload "
                                               f"limit of {cap:,} bytes for {path}")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:  # FastAPI passes an HTTPException raised while it reads the form on as is
                    raise HTTPException(413, f"request body over the upload limit of {cap:,} bytes for {path}")
            return message

        await self.app(scope, limited_receive, send)


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class DecodeGate:
    """At most ``n`` image decodes at once: each may take up to the decode budget of memory."""

    def __init__(self, n: int):
        self._sem = threading.BoundedSemaphore(max(1, n))

    def __enter__(self):
        self._sem.acquire()
        return self

    def __exit__(self, *exc):
        self._sem.release()
