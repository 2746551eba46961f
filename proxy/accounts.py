"""The upstream accounts (tokens): expiry, answers in flight, rests. State lives in the store.

Each configured token is one :class:`Account`, named ``account-1``… in logs, /healthz and
``/admin/accounts``; tokens are never printed. The pool:

- reads each token's JWT ``exp`` without checking the signature (the site's key is not ours,
  docs/protocol.md §9): an expired token is not used and is reported by label; one expiring within a
  day is warned about;
- sends each answer to the least busy account that is not resting and has fewer than
  ``max_inflight`` answers in flight (one atomic store step, shared by every gateway process on
  the same Redis), rotating among equals;
- rests an account that hits a limit: ``RateLimited`` for the hours chat.qwen.ai names
  (``num``, §10), ``ParallelLimited``/``Too_Many_Requests`` briefly and ``quotaLimited``/
  ``ExceedLimit``/``quota_exhausted`` for an hour (§13.3), a captcha or a refused token for
  ``cooldown_s`` (hammering a challenged account makes the WAF worse, §11.8). Rests are in the
  store, so every instance sees them. A single account never rests: there is nothing to rotate
  to, and the user who just cleared a captcha should not wait on the proxy.

With no token configured there is one anonymous account (offline replay), never limited. No
sign-in and no captcha solving happen here: a refused or expired token is reported and the user
renews it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from math import ceil
from typing import Any, Literal

import orjson
import structlog
from pydantic import SecretStr

from proxy.errors import (
    AccountsBusyError,
    KeyRateLimitedError,
    NoUpstreamTokenError,
    UpstreamCaptchaError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnauthorizedError,
)
from proxy.qwen.envelope import LIMIT_CODES
from proxy.store import MemoryStore, StateStore

__all__ = [
    "ADMISSION",
    "EXPIRY_WARNING_S",
    "REST_S",
    "Account",
    "AccountPool",
    "AccountState",
    "AccountStatus",
    "Admission",
    "jwt_expiry",
]

log = structlog.get_logger("proxy.accounts")

#: How long an account rests after each limit code (seconds; docs/protocol.md §13.3) when
#: chat.qwen.ai names no wait. A ``num`` (hours, §10) always wins; ``RateLimited`` without one
#: rests for ``cooldown_s``.
REST_S: dict[str, float] = {
    "ParallelLimited": 30.0,
    "Too_Many_Requests": 60.0,
    "quotaLimited": 3600.0,
    "ExceedLimit": 3600.0,
    "quota_exhausted": 3600.0,
}
#: A bare HTTP 429 (no code): a short rest.
HTTP_429_REST_S = 60.0
#: Tokens expiring sooner than this (seconds) are warned about.
EXPIRY_WARNING_S = 86400.0

AccountState = Literal["available", "busy", "resting", "expired"]


@dataclass(slots=True)
class Admission:
    """A request's per-key limits, counted together with its first account slot (one store
    round trip). ``key_id`` is a hash of the key; ``name`` its label; limits ``0`` = none.
    ``consumed`` turns true once the request was counted (then a stream slot is held when
    ``streams`` > 0, to be given back at the end of the request)."""

    key_id: str
    name: str
    per_min: int
    streams: int
    consumed: bool = False

    def refusal(self, what: str, wait_s: float) -> KeyRateLimitedError:
        """The 429 for a refused admission (``what``: ``requests_per_minute`` or ``streams``)."""
        limit = (
            f"{self.per_min} requests per minute"
            if what == "requests_per_minute"
            else f"{self.streams} answers at once"
        )
        wait = ceil(wait_s)
        return KeyRateLimitedError(
            f"this API key ({self.name}) is limited to {limit}; retry after {wait} s",
            retry_after_s=wait,
        )


#: The current request's :class:`Admission`, set by the per-key limits middleware and counted by
#: the request's first :meth:`AccountPool.acquire` (a context variable: per request task, never
#: shared between requests).
ADMISSION: ContextVar[Admission | None] = ContextVar("qwen_proxy_admission", default=None)


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, read WITHOUT checking its signature; ``None``
    when ``token`` is not a JWT or has no numeric ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(slots=True)
class Account:
    """One upstream identity. ``token`` is ``None`` for the anonymous account; ``expires_at``
    (epoch s) comes from the token's JWT ``exp``; ``last_error`` is a secret-free code."""

    label: str
    token: SecretStr | None
    expires_at: float | None = None
    last_error: str = ""
    last_error_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """One row of ``/admin/accounts`` (no token). Times are epoch seconds or ``None``."""

    label: str
    state: AccountState
    inflight: int
    max_inflight: int
    resting_until: float | None
    rest_reason: str
    last_error: str
    last_error_at: float | None
    expires_at: float | None
    expires_soon: bool

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this row."""
        return {
            "label": self.label,
            "state": self.state,
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            "resting_until": self.resting_until,
            "rest_reason": self.rest_reason or None,
            "last_error": self.last_error or None,
            "last_error_at": self.last_error_at,
            "expires_at": self.expires_at,
            "expires_soon": self.expires_soon,
        }


class AccountPool:
    """Chooses, limits and rests the upstream accounts; state shared through ``store``.

    ``max_inflight`` is the limit of answers in flight per account (0: none; the anonymous
    account has none). ``clock`` returns epoch seconds (injectable for tests). ``on_error`` is
    called with every upstream error reported (metrics).
    """

    def __init__(
        self,
        tokens: Sequence[SecretStr],
        store: StateStore | None = None,
        *,
        cooldown_s: float = 600.0,
        max_inflight: int = 0,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[UpstreamError], None] | None = None,
    ) -> None:
        self.accounts = [
            Account(f"account-{i + 1}", t, jwt_expiry(t.get_secret_value()))
            for i, t in enumerate(tokens)
        ] or [Account("anonymous", None)]
        self.store: StateStore = store if store is not None else MemoryStore(clock=clock)
        self.max_inflight = max_inflight
        self._by_label = {a.label: a for a in self.accounts}
        self._next = 0
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._on_error = on_error
        self._warned: set[tuple[str, str]] = set()
        #: The last upstream outcome: ``("ok" | error code, epoch s)``, or ``None`` before any.
        self.last_upstream: tuple[str, float] | None = None
        self.check_expiry()

    # -- expiry ----------------------------------------------------------------------------------

    def check_expiry(self) -> list[Account]:
        """The accounts whose token has not expired; logs each expired or soon-expiring token
        once (by label and date)."""
        now = self._clock()
        usable = []
        for a in self.accounts:
            if a.expires_at is not None and a.expires_at <= now:
                self._warn_once(a, "expired", "account_token_expired")
                continue
            if a.expires_at is not None and a.expires_at - now < EXPIRY_WARNING_S:
                self._warn_once(a, "soon", "account_token_expires_soon")
            usable.append(a)
        return usable

    def _warn_once(self, account: Account, what: str, event: str) -> None:
        if (account.label, what) in self._warned:
            return
        self._warned.add((account.label, what))
        assert account.expires_at is not None
        verb = "expired on" if what == "expired" else "expires on"
        log.warning(
            event,
            account=account.label,
            message=f"{account.label} {verb} {_iso(account.expires_at)}; sign in to "
            "chat.qwen.ai in a browser and replace its token",
        )

    def by_label(self, label: str) -> Account | None:
        """The account named ``label`` if it is configured and its token has not expired (a
        conversation's chat lives on one account), else ``None``. Whether it rests or is busy
        is known only when a slot is taken: :meth:`acquire_label`."""
        account = self._by_label.get(label)
        if account is None or (
            account.expires_at is not None and account.expires_at <= self._clock()
        ):
            return None
        return account

    async def resting_labels(self) -> set[str]:
        """The labels of the accounts resting now (one store read)."""
        return set(await self.store.rests())

    def _limit(self, account: Account) -> int:
        return 0 if account.token is None else self.max_inflight

    # -- taking and giving back ------------------------------------------------------------------

    async def acquire(self, *, rotate: bool = True, admit: bool = True) -> Account:
        """An account with a free answer slot (give it back with :meth:`release`). Among equally
        busy accounts the next in turn is taken; ``rotate=False`` leaves the turn where it is
        (side requests such as the model list). With ``admit``, the request's pending
        :data:`ADMISSION` (per-key limits) is counted in the same store step.

        Raises :class:`NoUpstreamTokenError` (503, ``Retry-After``) when every token has
        expired or every account rests, :class:`AccountsBusyError` (429) when every usable
        account is at ``max_inflight``, :class:`KeyRateLimitedError` (429) when the request's
        API key is over a limit.
        """
        usable = self.check_expiry()
        if not usable:
            raise NoUpstreamTokenError(
                "every upstream token has expired ("
                + "; ".join(f"{a.label} on {_iso(a.expires_at or 0)}" for a in self.accounts)
                + "): sign in to chat.qwen.ai in a browser and replace the tokens"
            )
        n = len(usable)
        start = self._next % n
        order = usable[start:] + usable[:start]
        now = self._clock()
        limit = self._limit(usable[0]) if n else 0
        labels = [a.label for a in order]
        admission = ADMISSION.get() if admit else None
        if admission is not None and not admission.consumed:
            label, soonest, refused = await self.store.admit_and_acquire(
                admission.key_id, admission.per_min, admission.streams, labels, limit, now
            )
            if refused is not None:
                raise admission.refusal(*refused)
            admission.consumed = label is not None
        else:
            label, soonest = await self.store.acquire_account(labels, limit, now)
        if label is not None:
            account = self._by_label[label]
            if rotate:
                self._next = (usable.index(account) + 1) % n
            return account
        if soonest:
            rests = await self.store.rests()
            reasons = sorted({reason for _, reason in rests.values() if reason})
            wait = max(1, int(soonest - now + 0.999))
            if reasons and all(r in LIMIT_CODES or r.startswith("rate limited") for r in reasons):
                # every account is over a site limit: the client is rate limited (429)
                raise UpstreamRateLimitedError(
                    f"every upstream account is over chat.qwen.ai's limits ({'; '.join(reasons)})"
                    f"; retry in {wait} s or add tokens",
                    retry_after_s=wait,
                    upstream_code=reasons[0],
                )
            raise NoUpstreamTokenError(
                f"every upstream account is resting ({'; '.join(reasons) or 'no reason recorded'}"
                "); add tokens or wait",
                retry_after_s=wait,
            )
        raise AccountsBusyError(
            f"every upstream account already has {self.max_inflight} answers in flight "
            "(max_inflight_per_account); retry in a moment"
        )

    async def acquire_label(self, label: str) -> Account | None:
        """A slot on the account ``label`` (a conversation continues on its chat's account), or
        ``None`` when it is unknown, expired, resting or at ``max_inflight``. The request's
        pending :data:`ADMISSION` is counted with it; raises :class:`KeyRateLimitedError` when
        the key is over a limit."""
        account = self.by_label(label)
        if account is None:
            return None
        now = self._clock()
        limit = self._limit(account)
        admission = ADMISSION.get()
        if admission is not None and not admission.consumed:
            taken, _, refused = await self.store.admit_and_acquire(
                admission.key_id, admission.per_min, admission.streams, [label], limit, now
            )
            if refused is not None:
                raise admission.refusal(*refused)
            admission.consumed = taken is not None
        else:
            taken, _ = await self.store.acquire_account([label], limit, now)
        return account if taken is not None else None

    async def release(self, account: Account) -> None:
        """Give back the answer slot :meth:`acquire` took."""
        await self.store.release_inflight(account.label)

    @asynccontextmanager
    async def lease(self, *, rotate: bool = True, admit: bool = True) -> AsyncIterator[Account]:
        """:meth:`acquire` … :meth:`release` as a context manager."""
        account = await self.acquire(rotate=rotate, admit=admit)
        try:
            yield account
        finally:
            await self.release(account)

    def succeeded(self) -> None:
        """Note that chat.qwen.ai answered (for /healthz)."""
        self.last_upstream = ("ok", self._clock())

    async def report(self, account: Account, error: UpstreamError) -> None:
        """Record ``error`` and rest ``account`` if it says so (limits, captcha, refused token).

        Sets ``error.retry_after_s`` to the rest when chat.qwen.ai named no wait, so the client's
        429 carries ``Retry-After``.
        """
        now = self._clock()
        code = error.error_code()
        self.last_upstream = (code, now)
        account.last_error = getattr(error, "upstream_code", None) or code
        account.last_error_at = now
        if self._on_error is not None:
            self._on_error(error)
        if isinstance(error, UpstreamRateLimitedError):
            seconds = self._rest_for(error)
            if error.retry_after_s is None:
                error.retry_after_s = max(1, int(seconds))
            await self._rest(account, seconds, error.upstream_code or "rate limited (HTTP 429)")
        elif isinstance(error, UpstreamCaptchaError):
            await self._rest(account, self._cooldown_s, "captcha")
        elif isinstance(error, UpstreamUnauthorizedError) and account.token is not None:
            await self._rest(account, self._cooldown_s, "token refused")

    def _rest_for(self, error: UpstreamRateLimitedError) -> float:
        """chat.qwen.ai's own wait (``num`` hours) when it named one, else the code's rest."""
        if error.retry_after_s:
            return float(error.retry_after_s)
        code = error.upstream_code
        if code in REST_S:
            return REST_S[code]
        return HTTP_429_REST_S if code is None else self._cooldown_s

    async def _rest(self, account: Account, seconds: float, reason: str) -> None:
        if len(self.accounts) == 1:
            # Nothing to rotate to: let the next request ask chat.qwen.ai again, so the user who
            # just solved the captcha in a browser is not kept waiting by the proxy.
            return
        until = self._clock() + seconds
        await self.store.rest_account(account.label, until, reason)
        log.info("account_resting", account=account.label, reason=reason, seconds=int(seconds))

    # -- reporting -------------------------------------------------------------------------------

    async def statuses(self) -> list[AccountStatus]:
        """Every account's state, in label order (two store reads)."""
        now = self._clock()
        rests = await self.store.rests()
        inflight = await self.store.inflight()
        out = []
        for a in self.accounts:
            rest = rests.get(a.label)
            n = inflight.get(a.label, 0)
            limit = self._limit(a)
            state: AccountState
            if a.expires_at is not None and a.expires_at <= now:
                state = "expired"
            elif rest is not None and rest[0] > now:
                state = "resting"
            elif limit > 0 and n >= limit:
                state = "busy"
            else:
                state = "available"
            out.append(
                AccountStatus(
                    label=a.label,
                    state=state,
                    inflight=n,
                    max_inflight=limit,
                    resting_until=rest[0] if rest else None,
                    rest_reason=rest[1] if rest else "",
                    last_error=a.last_error,
                    last_error_at=a.last_error_at or None,
                    expires_at=a.expires_at,
                    expires_soon=a.expires_at is not None
                    and now < a.expires_at < now + EXPIRY_WARNING_S,
                )
            )
        return out
