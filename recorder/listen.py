"""Why a server could not listen: one line for the user instead of a traceback.

Shared by ``qwen-record replay`` and ``qwen-proxy serve`` (the one place ``proxy`` imports from
``recorder`` outside offline mode: a dependency-free helper).
"""

from __future__ import annotations

import errno

__all__ = ["listen_failure"]


def listen_failure(exc: OSError, host: str, port: int) -> str | None:
    """One line saying why ``host:port`` could not be bound, or ``None`` when ``exc`` is about
    something else (errno EADDRINUSE, EACCES, EADDRNOTAVAIL)."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use on {host}; pass --port (another server is running there)"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port}; pass --port with a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; pass --host"
    return None
