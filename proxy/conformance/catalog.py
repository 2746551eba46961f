"""Every check of ``qwen-proxy check``, in report order.

The chat, streaming, image, error and auth checks (:mod:`proxy.conformance.checks`), then the
agent checks (:mod:`proxy.conformance.agents`: tools, ``/messages``, ``/responses``), then one
check per client profile (:mod:`proxy.conformance.profiles`).
"""

from __future__ import annotations

from proxy.conformance.agents import AGENT_CHECKS
from proxy.conformance.checks import CORE_CHECKS, CheckSpec
from proxy.conformance.profiles import PROFILE_CHECKS

__all__ = ["CHECKS"]

CHECKS: tuple[CheckSpec, ...] = (*CORE_CHECKS, *AGENT_CHECKS, *PROFILE_CHECKS)
"""Every check, in report order; ids are unique."""

assert len({c.id for c in CHECKS}) == len(CHECKS), "check ids must be unique"
