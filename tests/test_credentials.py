"""Which credentials a keyed gateway accepts (README, "Configuration"): a key as
``Authorization: Bearer`` or ``x-api-key``; with both, either valid key will do; two of the same
header are refused whatever they hold (which one counted depended on their order); the
conversation scope of a request with two different values depends on both."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from helpers import ServerFactory, Stack, start_stack
from multidict import CIMultiDict

from proxy.app import _key_check
from proxy.continuation import scope_of
from proxy.errors import AuthenticationError
from proxy.state import KEY_RULE, KeyRule

GOOD = "sk-good-0123456789"
WRONG = "sk-wrong-9876543210"


async def _get(stack: Stack, path: str, header_lines: list[str]) -> tuple[int, dict[str, Any]]:
    """``GET path`` with exactly these header lines (duplicates kept, in order)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.proxy.port)
    head = "".join(f"{line}\r\n" for line in header_lines)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Connection: close\r\n\r\n".encode()
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


AUTH_GOOD, AUTH_WRONG = f"Authorization: Bearer {GOOD}", f"Authorization: Bearer {WRONG}"
X_GOOD, X_WRONG = f"x-api-key: {GOOD}", f"x-api-key: {WRONG}"

#: case -> (header lines, status, a fragment of the 401 message)
CASES: dict[str, tuple[list[str], int, str]] = {
    "bearer": ([AUTH_GOOD], 200, ""),
    "x_api_key": ([X_GOOD], 200, ""),
    "bearer_good_x_wrong": ([AUTH_GOOD, X_WRONG], 200, ""),
    "x_good_bearer_wrong": ([X_GOOD, AUTH_WRONG], 200, ""),
    "bearer_wrong_x_good": ([AUTH_WRONG, X_GOOD], 200, ""),
    "both_good": ([AUTH_GOOD, X_GOOD], 200, ""),
    "basic_auth_x_good": (["Authorization: Basic dXNlcjpwYXNz", X_GOOD], 200, ""),
    "both_wrong": ([AUTH_WRONG, X_WRONG], 401, "Incorrect API key"),
    "bearer_wrong": ([AUTH_WRONG], 401, "Incorrect API key"),
    "none": ([], 401, "Missing API key"),
    "two_bearers_good_first": ([AUTH_GOOD, AUTH_WRONG], 401, "Ambiguous credentials"),
    "two_bearers_good_last": ([AUTH_WRONG, AUTH_GOOD], 401, "Ambiguous credentials"),
    "two_bearers_both_good": ([AUTH_GOOD, AUTH_GOOD], 401, "Ambiguous credentials"),
    "two_x_good_first": ([X_GOOD, X_WRONG], 401, "Ambiguous credentials"),
    "two_x_good_last": ([X_WRONG, X_GOOD], 401, "Ambiguous credentials"),
    "bearer_good_two_x": ([AUTH_GOOD, X_GOOD, X_WRONG], 401, "Ambiguous credentials"),
}


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    return await start_stack(aiohttp_server, api_keys=[GOOD])


@pytest.mark.parametrize("case", sorted(CASES))
async def test_each_combination_of_credential_headers(stack: Stack, case: str) -> None:
    lines, want, said = CASES[case]
    status, payload = await _get(stack, "/v1/models", lines)
    assert status == want, payload
    if want == 401:
        error = payload["error"]
        assert error["type"] == "authentication_error" and said in error["message"]
        assert GOOD not in json.dumps(payload) and WRONG not in json.dumps(payload)


@pytest.mark.parametrize("case", ["two_bearers_good_first", "two_bearers_good_last"])
async def test_two_admin_keys_are_refused(aiohttp_server: ServerFactory, case: str) -> None:
    """The admin and metrics keys follow the same rule: sent once."""
    stack = await start_stack(aiohttp_server, admin_key=GOOD)
    status, payload = await _get(stack, "/admin/accounts", CASES[case][0])
    assert status == 401 and "Ambiguous credentials" in payload["error"]["message"]
    status, _ = await _get(stack, "/admin/accounts", [AUTH_GOOD])
    assert status == 200


def _checked(keys: list[tuple[bytes, KeyRule | None]], *headers: tuple[str, str]) -> Any:
    request = make_mocked_request("GET", "/v1/models", headers=CIMultiDict(headers))
    _key_check(keys, frozenset())(request)
    return request.get(KEY_RULE)


def test_the_limits_are_those_of_the_valid_key() -> None:
    """With both headers, the limits of the key that is valid; of the ``Authorization`` key
    when both are."""
    team_a = KeyRule("a", "team-a", 60, 0)
    team_b = KeyRule("b", "team-b", 0, 2)
    keys = [(b"k-a", team_a), (b"k-b", team_b), (b"k-open", None)]
    assert _checked(keys, ("Authorization", "Bearer k-a"), ("x-api-key", "k-b")) is team_a
    assert _checked(keys, ("x-api-key", "k-b"), ("Authorization", "Bearer k-a")) is team_a
    assert _checked(keys, ("Authorization", "Bearer junk"), ("x-api-key", "k-b")) is team_b
    assert _checked(keys, ("Authorization", "Bearer k-b"), ("x-api-key", "junk")) is team_b
    assert _checked(keys, ("Authorization", "Bearer k-open"), ("x-api-key", "k-b")) is None
    with pytest.raises(AuthenticationError):
        _checked(keys, ("Authorization", "Bearer junk"), ("x-api-key", "junk2"))


def test_the_scope_of_two_different_values_depends_on_both() -> None:
    """A request is served when either of its two values is a valid key, so its scope (its
    conversations, its stored responses) is not that of the other value alone: a client that
    sends another valid key beside the same junk does not share it."""

    def scope(**headers: str) -> str:
        return scope_of({k.replace("_", "-"): v for k, v in headers.items()})

    alone = scope(Authorization=f"Bearer {GOOD}")
    assert alone == scope(x_api_key=GOOD)  # one key, either header
    assert scope(Authorization=f"Bearer {GOOD}", x_api_key=GOOD) == alone  # the same value twice
    pair = scope(Authorization="Bearer junk", x_api_key=GOOD)
    assert pair not in (alone, scope(Authorization="Bearer junk"), "")
    assert pair != scope(Authorization="Bearer junk", x_api_key="sk-another-key")
    assert scope(Authorization="Basic abc", x_api_key=GOOD) == alone  # not a bearer key
