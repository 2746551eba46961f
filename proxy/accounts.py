"""The upstream accounts (tokens) and their rotation. Pure state, no I/O.

Each configured token is one :class:`Account`. Requests take accounts in turn; an account that
hits its quota rests for the hours chat.qwen.ai names (``RateLimited.num``, PROTOCOL.md §10), one
that draws a captcha or a refused token rests for ``cooldown_s`` (hammering a challenged account
makes the WAF worse, §11.8). A single account never rests: there is nothing to rotate to, and
the user who just cleared a captcha should not wait on the proxy. With no token configured
there is one anonymous account, which is what offline replay uses. Accounts are named
``account-1``… in logs; tokens are never printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from proxy.errors import (
    NoUpstreamTokenError,
    UpstreamCaptchaError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnauthorizedError,
)

__all__ = ["Account", "AccountPool"]


@dataclass(slots=True)
class Account:
    """One upstream identity. ``token`` is ``None`` for the anonymous account."""

    label: str
    token: SecretStr | None
    parked_until: float = 0.0
    parked_reason: str = ""


class AccountPool:
    """Round-robin over the accounts that are not resting.

    ``clock`` returns seconds (monotonic); injectable for tests.
    """

    def __init__(
        self,
        tokens: Sequence[SecretStr],
        *,
        cooldown_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.accounts = [Account(f"account-{i + 1}", t) for i, t in enumerate(tokens)] or [
            Account("anonymous", None)
        ]
        self._next = 0
        self._cooldown_s = cooldown_s
        self._clock = clock

    def acquire(self) -> Account:
        """The next usable account. Raises :class:`NoUpstreamTokenError` when all are resting."""
        now = self._clock()
        n = len(self.accounts)
        for i in range(n):
            account = self.accounts[(self._next + i) % n]
            if account.parked_until <= now:
                self._next = (self._next + i + 1) % n
                return account
        soonest = min(a.parked_until for a in self.accounts)
        reasons = sorted({a.parked_reason for a in self.accounts if a.parked_reason})
        raise NoUpstreamTokenError(
            f"every upstream account is resting ({'; '.join(reasons) or 'no reason recorded'}); "
            "add tokens or wait",
            retry_after_s=max(1, int(soonest - now)),
        )

    def by_label(self, label: str) -> Account | None:
        """The account named ``label`` if it exists and is not resting (a conversation's chat
        lives on one account), else ``None``."""
        for account in self.accounts:
            if account.label == label:
                return account if account.parked_until <= self._clock() else None
        return None

    def report(self, account: Account, error: UpstreamError) -> None:
        """Rest ``account`` if ``error`` says it should (quota, captcha, refused token)."""
        if isinstance(error, UpstreamRateLimitedError):
            self._park(account, float(error.retry_after_s or self._cooldown_s), "quota reached")
        elif isinstance(error, UpstreamCaptchaError):
            self._park(account, self._cooldown_s, "captcha")
        elif isinstance(error, UpstreamUnauthorizedError) and account.token is not None:
            self._park(account, self._cooldown_s, "token refused")

    def _park(self, account: Account, seconds: float, reason: str) -> None:
        if len(self.accounts) == 1:
            # Nothing to rotate to: let the next request ask chat.qwen.ai again, so the user who
            # just solved the captcha in a browser is not kept waiting by the proxy.
            return
        account.parked_until = self._clock() + seconds
        account.parked_reason = reason
