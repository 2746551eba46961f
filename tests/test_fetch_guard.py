"""The media fetch guard's address check: an allow-list of public unicast
addresses, with IPv6 forms that embed an IPv4 address judged by the IPv4 address."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.errors import MediaURLRefusedError
from proxy.fetch import check_address, embedded_ipv4, is_public

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
    with pytest.raises(MediaURLRefusedError) as info:
        check_address("h.example", addr, allow_private=False)
    assert info.value.param == "messages"
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
