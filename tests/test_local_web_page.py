"""A web page must not drive a local gateway: CSRF with "simple" requests, DNS
rebinding through a foreign Host, browser Origins while no API key is set."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from helpers import ServerFactory, Stack, start_stack

from proxy.config import Settings
from proxy.guard import _JSON_TYPES, allowed_host_names
from recorder.replay import REQUESTS_KEY

CHAT = {
    "model": "qwen3-max",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
}


async def _send(
    stack: Stack, method: str, path: str, *, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as s,
        s.request(method, stack.proxy.make_url(path), data=body, headers=headers) as r,
    ):
        return r.status, json.loads(await r.read())


@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_simple_cross_site_post_is_refused(
    aiohttp_server: ServerFactory, ctype: str | None
) -> None:
    """A POST a web page can send without a preflight (text/plain, a form) is 415 and never
    reaches chat.qwen.ai."""
    stack = await start_stack(aiohttp_server)
    headers = {"Content-Type": ctype} if ctype else {}
    status, payload = await _send(
        stack, "POST", "/v1/chat/completions", body=json.dumps(CHAT).encode(), **headers
    )
    assert status == 415
    assert payload["error"]["code"] == "unsupported_media_type"
    assert "application/json" in payload["error"]["message"]
    assert not stack.replay.app[REQUESTS_KEY]


@pytest.mark.parametrize("raw", sorted(_JSON_TYPES))
def test_a_known_json_content_type_reads_as_aiohttp_reads_it(raw: str) -> None:
    """The guard's table of usual JSON Content-Type values (not parsed again) says what
    aiohttp's own parse says, entry by entry."""
    assert (
        _JSON_TYPES[raw]
        == make_mocked_request("POST", "/", headers={"Content-Type": raw}).content_type
    )


async def _post_chat(stack: Stack, ctype: str) -> tuple[int, dict[str, Any]]:
    return await _send(
        stack,
        "POST",
        "/v1/chat/completions",
        body=json.dumps(CHAT).encode(),
        **{"Content-Type": ctype},
    )


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json; charset=utf-8",
        "application/json;charset=utf-8",
        "Application/JSON",
        "application/json; charset=UTF-8",
    ],
)
async def test_json_content_types_are_accepted(aiohttp_server: ServerFactory, ctype: str) -> None:
    """``application/json`` with a charset is JSON; known (from the guard's table) and other
    spellings alike."""
    status, _ = await _post_chat(await start_stack(aiohttp_server), ctype)
    assert status == 200


@pytest.mark.parametrize(
    "ctype", ["application/jsonx", "text/json", "application/json-seq; charset=utf-8"]
)
async def test_near_json_content_types_are_refused(
    aiohttp_server: ServerFactory, ctype: str
) -> None:
    status, payload = await _post_chat(await start_stack(aiohttp_server), ctype)
    assert status == 415
    assert payload["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "10.0.0.1"])
async def test_foreign_host_is_refused(aiohttp_server: ServerFactory, host: str) -> None:
    """A Host that is neither the bound address, localhost nor configured is 403 (DNS
    rebinding); /healthz stays open."""
    stack = await start_stack(aiohttp_server)
    status, payload = await _send(stack, "GET", "/v1/models", Host=host)
    assert status == 403
    assert payload["error"]["code"] == "forbidden_host"
    status, _ = await _send(stack, "GET", "/healthz", Host=host)
    assert status == 200


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "LOCALHOST", "gateway.lan:80"])
async def test_local_and_configured_hosts_pass(aiohttp_server: ServerFactory, host: str) -> None:
    """localhost, the bound address and `allowed_hosts` names are served."""
    stack = await start_stack(aiohttp_server, allowed_hosts=["gateway.lan"])
    status, _ = await _send(stack, "GET", "/v1/models", Host=host)
    assert status == 200


def test_host_rules_for_wildcard_and_star() -> None:
    """Listening on every address accepts IP literals; `*` turns the check off."""
    names, any_ip, any_host = allowed_host_names(Settings(host="0.0.0.0"))
    assert any_ip and not any_host and "localhost" in names
    names, any_ip, any_host = allowed_host_names(Settings(host="10.1.2.3"))
    assert not any_ip and "localhost" not in names and "10.1.2.3" in names
    assert allowed_host_names(Settings(allowed_hosts=["*"]))[2]
    names, _, _ = allowed_host_names(Settings(host="::1"))
    assert "::1" in names and "localhost" in names


async def test_browser_origin_refused_without_key(aiohttp_server: ServerFactory) -> None:
    """With no API key, a browser Origin not in cors_origins is 403 even for a JSON POST (a
    page could send one after a preflight the gateway does not answer, or via a plug-in)."""
    stack = await start_stack(aiohttp_server, cors_origins=["http://localhost:3000"])
    status, payload = await _send(
        stack,
        "POST",
        "/v1/chat/completions",
        body=json.dumps(CHAT).encode(),
        **{"Content-Type": "application/json", "Origin": "https://evil.example"},
    )
    assert status == 403
    assert payload["error"]["code"] == "forbidden_origin"
    assert not stack.replay.app[REQUESTS_KEY]
    status, _ = await _send(
        stack,
        "POST",
        "/v1/chat/completions",
        body=json.dumps(CHAT).encode(),
        **{"Content-Type": "application/json", "Origin": "http://localhost:3000"},
    )
    assert status == 200


async def test_browser_origin_allowed_with_key(aiohttp_server: ServerFactory) -> None:
    """With an API key configured the key is the defence: an Origin alone is not refused."""
    stack = await start_stack(aiohttp_server, api_keys=["k-123456"])
    status, _ = await _send(
        stack,
        "GET",
        "/v1/models",
        Origin="https://app.example",
        Authorization="Bearer k-123456",
    )
    assert status == 200


def test_each_host_keeps_its_verdict_however_many_hosts_are_seen() -> None:
    """The Host verdicts are kept per header value (a few per gateway) in a bounded table:
    asked again, and after more values than the table holds, each Host gets the same answer."""
    from aiohttp.test_utils import make_mocked_request

    from proxy.errors import ForbiddenRequestError
    from proxy.guard import _MAX_VERDICTS, guard_check

    check = guard_check(Settings(allowed_hosts=["gateway.lan"]))

    def served(host: str) -> bool:
        request = make_mocked_request("GET", "/v1/models", headers={"Host": host})
        try:
            check(request)
        except ForbiddenRequestError as exc:
            assert exc.error_code() == "forbidden_host"
            assert host.split(":")[0].lower() in exc.message
            return False
        return True

    hosts = [f"h{i}.example" for i in range(_MAX_VERDICTS * 2 + 3)]
    for _ in range(2):
        assert served("127.0.0.1:8000") and served("GATEWAY.lan:80")
        assert not served("attacker.example") and not served("10.0.0.1")
        assert not any(served(h) for h in hosts)  # more than the table holds
        assert served("localhost") and not served("")


#: Host values that are not exactly one ``host[:port]``, each built around a name the gateway
#: serves (a check that reads a prefix of the value, or splits it loosely, lets them through)
MALFORMED_HOSTS = {
    "comma_list": "localhost:8000, evil.example",
    "comma_list_ip": "127.0.0.1:8000,evil.example",
    "tab": "127.0.0.1:8000\tevil.example",
    "space": "localhost evil.example",
    "trailing_garbage": "localhost:8000x",
    "trailing_path": "127.0.0.1:8000/evil.example",
    "userinfo": "evil.example@localhost:8000",
    "userinfo_after": "localhost@evil.example",
    "empty_port": "localhost:",
    "non_numeric_port": "localhost:http",
    "port_out_of_range": "127.0.0.1:99999",
    "two_colons_no_brackets": "::1",
    "two_colons_port_no_brackets": "::1:8000",
    "unclosed_bracket": "[::1",
    "bracketed_ipv4": "[127.0.0.1]:8000",
}


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
@pytest.mark.parametrize("case", sorted(MALFORMED_HOSTS))
def test_a_host_that_is_not_one_host_and_port_is_refused(case: str, bind: str) -> None:
    """The whole Host value is judged: a list, whitespace, junk, userinfo or a bad port is
    403 ``forbidden_host`` like a foreign name, however it begins (also when listening on
    every address, where any IP literal is served); the message quotes the value, cut."""
    from proxy.errors import ForbiddenRequestError
    from proxy.guard import guard_check

    host = MALFORMED_HOSTS[case]
    check = guard_check(Settings(host=bind))
    with pytest.raises(ForbiddenRequestError) as info:
        check(make_mocked_request("GET", "/v1/models", headers={"Host": host}))
    assert info.value.error_code() == "forbidden_host"
    assert repr(host) in info.value.message


@pytest.mark.parametrize(
    "host", ["localhost:8000", "LOCALHOST:65535", "127.0.0.1", "[::1]:8000", "[::1]", "::1"]
)
def test_one_host_and_port_is_served(host: str) -> None:
    """The served names, with and without a port (IPv6 in brackets); ``::1`` bare only as
    part of ``[::1]``."""
    from proxy.errors import ForbiddenRequestError
    from proxy.guard import guard_check

    check = guard_check(Settings())
    request = make_mocked_request("GET", "/v1/models", headers={"Host": host})
    if host == "::1":
        with pytest.raises(ForbiddenRequestError):
            check(request)
    else:
        check(request)


@pytest.mark.parametrize(
    "host", ["localhost:{port}, evil.example", "127.0.0.1:{port}\tevil.example"]
)
async def test_a_host_list_is_refused_on_the_wire(aiohttp_server: ServerFactory, host: str) -> None:
    """The values of the report, sent as bytes: 403 and nothing reaches chat.qwen.ai."""
    stack = await start_stack(aiohttp_server)
    port = stack.proxy.port
    body = json.dumps(CHAT).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host.format(port=port)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 "), head
    assert json.loads(payload)["error"]["code"] == "forbidden_host"
    assert not stack.replay.app[REQUESTS_KEY]


async def _raw_post(stack: Stack, path: str, content_type_lines: str, body: bytes) -> Any:
    """POST ``body`` with the given raw ``Content-Type`` header lines; the answer's status and
    JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.proxy.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{content_type_lines}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


#: Content-Type header lines a JSON route refuses -> what its 415 message says was sent
#: (aiohttp reads a missing, empty or malformed value as application/octet-stream)
SENT_TYPES = {
    "list": ("Content-Type: application/json, text/plain\r\n", "'application/json, text/plain'"),
    "empty": ("Content-Type: \r\n", "`Content-Type` header is empty"),
    "blank": ("Content-Type:   \r\n", "`Content-Type` header is empty"),
    "missing": ("", "no `Content-Type` header"),
    "plain": ("Content-Type: text/plain; charset=utf-8\r\n", "'text/plain; charset=utf-8'"),
    "long": ("Content-Type: text/" + "x" * 500 + "\r\n", "'text/" + "x" * 54 + "…'"),
}


@pytest.mark.parametrize("case", sorted(SENT_TYPES))
async def test_the_415_says_what_content_type_was_sent(
    aiohttp_server: ServerFactory, case: str
) -> None:
    stack = await start_stack(aiohttp_server)
    lines, said = SENT_TYPES[case]
    status, payload = await _raw_post(
        stack, "/v1/chat/completions", lines, json.dumps(CHAT).encode()
    )
    assert status == 415
    message = payload["error"]["message"]
    assert said in message and "octet-stream" not in message, message
    assert "`Content-Type: application/json`" in message
    assert not stack.replay.app[REQUESTS_KEY]
