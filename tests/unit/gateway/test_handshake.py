"""The handshake's pure decisions: client address, origin, token, the login cookie."""

from __future__ import annotations

import ipaddress

import pytest

from resofleet.contracts import Role
from resofleet.gateway.handshake import (
    COOKIE,
    client_address,
    find_token,
    host_allowed,
    login_cookie,
    login_page,
    logout_cookie,
    origin_allowed,
    parse_cookies,
)
from resofleet.gateway.identity import Principal

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


# -- client address -----------------------------------------------------------------------


def test_peer_is_the_client_without_trusted_proxies():
    """X-Forwarded-For is ignored when no proxy is trusted: anyone can write it."""
    assert client_address("203.0.113.9", ["1.2.3.4"], ()) == "203.0.113.9"


def test_untrusted_peer_cannot_name_another_client():
    """A peer outside trusted_proxies is the client, whatever it forwards."""
    assert client_address("203.0.113.9", ["1.2.3.4"], PROXIES) == "203.0.113.9"


def test_trusted_proxy_names_the_client():
    """From a trusted proxy, the right-most entry is the client."""
    assert client_address("10.0.0.2", ["198.51.100.7"], PROXIES) == "198.51.100.7"


def test_rightmost_untrusted_entry_wins_over_forged_left_entries():
    """Entries left of the first untrusted hop may be forged; they are not believed."""
    chain = ["6.6.6.6, 198.51.100.7, 10.1.1.1"]
    assert client_address("10.0.0.2", chain, PROXIES) == "198.51.100.7"


def test_several_headers_are_one_list_in_order():
    """Repeated X-Forwarded-For headers are joined in the order received."""
    assert client_address("10.0.0.2", ["6.6.6.6", "198.51.100.7"], PROXIES) == "198.51.100.7"


def test_all_trusted_chain_gives_the_leftmost():
    """When every hop is a trusted proxy, the left-most one is the client."""
    assert client_address("10.0.0.2", ["10.0.0.9, 10.0.0.5"], PROXIES) == "10.0.0.9"


def test_trusted_proxy_without_header_is_the_client():
    """No X-Forwarded-For from a trusted proxy: the proxy itself is the address."""
    assert client_address("10.0.0.2", [], PROXIES) == "10.0.0.2"


def test_garbage_entry_stops_at_the_last_good_hop():
    """An entry that is not an address is not believed, nor anything left of it."""
    assert client_address("10.0.0.2", ["1.2.3.4, garbage, 10.0.0.7"], PROXIES) == "10.0.0.7"


def test_ports_brackets_and_mapped_addresses():
    """v4:port, [v6]:port and IPv4-mapped IPv6 peers are understood."""
    assert client_address("::ffff:10.0.0.2", ["198.51.100.7:5555"], PROXIES) == "198.51.100.7"
    assert client_address("fd00::1", ["[2001:db8::5]:443"], PROXIES) == "2001:db8::5"
    assert client_address("::1", [], PROXIES) == "::1"


# -- origin --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "gw:8000", True),  # not a browser
        ("http://gw:8000", "gw:8000", True),
        ("HTTP://GW:8000", "gw:8000", True),
        ("http://gw", "gw", True),  # default ports on both sides
        ("http://gw:80", "gw", True),
        ("https://gw", "gw", True),  # Host without a port: the Origin's scheme's default
        ("https://gw", "gw:443", True),
        ("https://gw", "gw:80", False),
        ("http://gw:8001", "gw:8000", False),
        ("http://evil.example", "gw:8000", False),
        ("http://gw.evil.example:8000", "gw:8000", False),
        ("null", "gw:8000", False),
        ("file://", "gw:8000", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://[::1]:8000", "127.0.0.1:8000", False),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://gw:8000", None, False),
    ],
)
def test_same_origin(origin, host, allowed):
    """Same origin: the Origin's host and port equal the Host header's."""
    assert origin_allowed(origin, host, ()) is allowed


def test_configured_origins_are_allowed_with_default_ports_normalised():
    """A configured origin is allowed from any Host; default ports match either way."""
    configured = ("https://dash.example.com", "http://localhost:3000")
    assert origin_allowed("https://dash.example.com:443", "gw:8000", configured)
    assert origin_allowed("http://localhost:3000", "gw:8000", configured)
    assert not origin_allowed("http://dash.example.com", "gw:8000", configured)
    assert not origin_allowed("http://localhost:3001", "gw:8000", configured)


# -- token ---------------------------------------------------------------------------------


def test_token_order_is_header_then_query_then_cookie():
    """Bearer header first, then ?token=, then the cookie."""
    cookie = [f"{COOKIE}=C"]
    assert find_token("Bearer H", "token=Q", cookie) == ("H", "header")
    assert find_token(None, "a=1&token=Q", cookie) == ("Q", "query")
    assert find_token(None, "", cookie) == ("C", "cookie")
    assert find_token(None, "", []) is None


def test_token_details():
    """The scheme is case-insensitive, other schemes and empty values count as absent,
    and a query token is percent-decoded."""
    assert find_token("bearer  H ", "", []) == ("H", "header")
    assert find_token("Basic dXNlcjpwdw==", "token=Q", []) == ("Q", "query")
    assert find_token("Bearer ", "token=", [f"{COOKIE}="]) is None
    assert find_token(None, "token=a%2Eb", []) == ("a.b", "query")


def test_cookies_survive_other_applications_cookies():
    """A malformed or quoted cookie of another application does not hide ours."""
    cookies = parse_cookies(['junk; a="b c"; ' + f'{COOKIE}="T"', f"{COOKIE}=later"])
    assert cookies[COOKIE] == "T" and cookies["a"] == "b c"


# -- /login ----------------------------------------------------------------------------------


def test_login_cookie_is_httponly_strict_and_lives_as_long_as_the_token():
    """Max-Age is the seconds until exp; Secure only with TLS."""
    principal = Principal(sub="ann", role=Role.VIEWER, expires=1_000_100.5, jti="j")
    cookie = login_cookie("T", principal, now=1_000_000.0, secure=False)
    assert cookie == f"{COOKIE}=T; Path=/; HttpOnly; SameSite=Strict; Max-Age=100"
    assert login_cookie("T", principal, now=1_000_000.0, secure=True).endswith("; Secure")
    assert "Max-Age=0" in logout_cookie(secure=False)


def test_login_page_escapes_what_it_prints():
    """A sub with markup is printed as text."""
    page = login_page(Principal(sub="<script>x</script>", role=Role.ADMIN, servers=("eu-*",)))
    assert "<script>x" not in page and "&lt;script&gt;" in page and "eu-*" in page


@pytest.mark.parametrize(
    ("host", "open_mode", "hosts", "allowed"),
    [
        ("127.0.0.1:8000", True, (), True),
        ("127.9.9.9", True, (), True),
        ("[::1]:8000", True, (), True),
        ("localhost:8000", True, (), True),
        ("LocalHost.", True, (), True),
        ("dash.localhost:8000", True, (), True),
        # DNS rebinding: names an attacker can point at 127.0.0.1
        ("rebind.example.test:8000", True, (), False),
        ("localhost.example.test", True, (), False),
        ("127.0.0.1.example.test", True, (), False),
        ("10.0.0.5:8000", True, (), False),
        (None, True, (), False),
        ("", True, (), False),
        ("dash.example.com", True, ("dash.example.com",), True),
        # with a secret, any name unless the operator listed some
        ("gw.example.com:443", False, (), True),
        (None, False, (), True),
        ("gw.example.com", False, ("dash.example.com",), False),
        ("dash.example.com:443", False, ("dash.example.com",), True),
        ("localhost:8000", False, ("dash.example.com",), True),
    ],
)
def test_host_allowed(host, open_mode, hosts, allowed):
    """Loopback names and configured ones always; in open mode nothing else."""
    assert host_allowed(host, open_mode=open_mode, hosts=hosts) is allowed
