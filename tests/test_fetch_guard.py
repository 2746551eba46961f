"""The media fetch guard's address check: an allow-list of public unicast
addresses, with IPv6 forms that embed an IPv4 address judged by the IPv4 address; and the
fetch itself connecting to the address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import fetch
from proxy.config import Settings
from proxy.conformance import probes
from proxy.conformance.probes import fetch_image
from proxy.errors import MediaURLRefusedError
from proxy.fetch import check_address, embedded_ipv4, is_public, pinned_request

# a 1x1 PNG (the smallest valid image the blob check accepts)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c"
    "6360000002000154a24f5d0000000049454e44ae426082"
)

REFUSED = [
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",
    "240.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64 10.0.0.1
    "2002:7f00:1::",  # 6to4 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of a public address
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize("text", REFUSED)
def test_non_public_addresses_are_refused(text: str) -> None:
    """Each non-public address, in any IPv6 disguise, is refused."""
    addr = ipaddress.ip_address(text)
    assert not is_public(addr)
    where = "messages[0].content[1].image_url.url"
    with pytest.raises(MediaURLRefusedError) as info:
        check_address("h.example", addr, allow_private=False, param=where)
    assert info.value.param == where
    check_address("h.example", addr, allow_private=True)  # the setting lets it through


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses_pass(text: str) -> None:
    """Public unicast addresses (and IPv6 forms of public IPv4 ones) are fetched."""
    check_address("h.example", ipaddress.ip_address(text), allow_private=False)


@pytest.mark.parametrize(
    ("v6", "v4"),
    [
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b::102:304", "1.2.3.4"),
        ("2002:102:304::", "1.2.3.4"),
        ("::1", None),
        ("2606:4700::1", None),
        ("1.2.3.4", None),
    ],
)
def test_embedded_ipv4(v6: str, v4: str | None) -> None:
    """The IPv4 meaning of each IPv6 form."""
    got = embedded_ipv4(ipaddress.ip_address(v6))
    assert (str(got) if got else None) == v4


# -- the connection goes to the checked address (no second DNS answer) ---------------------------


def test_a_pinned_request_keeps_the_name_for_host_and_tls() -> None:
    url, options = pinned_request(
        "https://media.example:8443/a/b.png?x=1#frag", ipaddress.ip_address("2606:4700::1")
    )
    assert url == "https://[2606:4700::1]:8443/a/b.png?x=1"
    assert options == {
        "headers": {"Host": "media.example:8443", "Connection": "close"},
        "server_hostname": "media.example",
    }
    url, options = pinned_request("http://media.example/", ipaddress.ip_address("8.8.8.8"))
    assert url == "http://8.8.8.8:80/"
    assert options == {"headers": {"Host": "media.example", "Connection": "close"}}


async def _picture_server(aiohttp_server: Any) -> tuple[Any, list[str]]:
    """A server with ``/cat.png``, and the ``Host`` header of each request it got."""
    seen: list[str] = []

    async def picture(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat.png", picture)
    return await aiohttp_server(app), seen


async def test_the_fetch_connects_to_the_address_it_checked(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once, for the check; the request goes to that address. A name
    no DNS knows (``.invalid``) is fetched when the check's resolution says where it is: had
    the connection resolved the name again (where a rebinding DNS would answer differently),
    it would have failed."""
    server, seen = await _picture_server(aiohttp_server)
    resolved: list[str] = []

    async def resolve(host: str, port: int, param: str | None = None) -> list[Any]:
        resolved.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(fetch, "_resolve", resolve)
    url = f"http://pictures.invalid:{server.port}/cat.png"
    async with aiohttp.ClientSession() as session:
        blob = await fetch.fetch_url(
            session, url, expect="image", settings=Settings(allow_private_fetch=True)
        )
    assert blob.data == PNG
    assert resolved == ["pictures.invalid"]
    assert seen == [f"pictures.invalid:{server.port}"]


# -- the conformance harness fetches the image URLs a target hands out the same way -------------


@pytest.mark.parametrize(
    "host", ["[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]", "[::7f00:1]", "[2002:a9fe:a9fe::1]"]
)
async def test_the_harness_is_not_sent_to_a_loopback_or_metadata_address(host: str) -> None:
    """A target under test that answers with an image URL on an IPv6 form of a loopback or
    cloud-metadata address does not get the harness to fetch it (judged by the IPv4 inside)."""
    async with aiohttp.ClientSession() as session:
        out = await fetch_image(session, f"http://{host}:9/cat.png", timeout_s=5)
    assert out.error is not None and out.error.startswith("refused"), out
    assert out.status is None


async def test_the_harness_fetches_from_the_address_it_checked(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, seen = await _picture_server(aiohttp_server)

    async def getaddrinfo(host: str, port: Any, *args: Any, **kw: Any) -> list[Any]:
        assert host == "pictures.invalid"  # only the check resolves; the connection does not
        return [(2, 1, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(probes, "is_public", lambda addr: True)  # loopback stands in for public
    async with aiohttp.ClientSession() as session:
        out = await fetch_image(session, f"http://pictures.invalid:{server.port}/cat.png")
    assert (out.error, out.status, out.format) == (None, 200, "png")
    assert seen == [f"pictures.invalid:{server.port}"]


@pytest.mark.parametrize("allow_private", [False, True])
async def test_malformed_image_url_is_reported_not_raised(allow_private: bool) -> None:
    """A URL that cannot be parsed (``Invalid IPv6 URL``) is a failed download, not an
    exception."""
    async with aiohttp.ClientSession() as session:
        got = await fetch_image(session, "http://[bad/a.png", allow_private=allow_private)
    assert got.error is not None and got.error.startswith("malformed URL: ")
    assert got.describe().startswith("GET http://[bad/a.png: malformed URL")
