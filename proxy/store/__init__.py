"""Shared state (:class:`StateStore`) and its backends; see :mod:`proxy.store.base`."""

from __future__ import annotations

from proxy.store.base import Health, StateStore
from proxy.store.memory import MemoryStore

__all__ = ["Health", "MemoryStore", "StateStore"]
