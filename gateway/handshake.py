"""The opening handshake's security decisions, as pure functions of the request.

No sockets and no clock here: :class:`~resofleet.gateway.server.Edge` reads the request, calls these,
and answers. Each is tested without I/O.

- :func:`client_address`: who the client is. The TCP peer, unless the peer is a trusted
  proxy: then the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy
  (each proxy appends the address it received the request from, so entries to the left of
  the first untrusted one could have been written by anyone).
- :func:`host_allowed`: the ``Host`` header names the gateway: a loopback name or address,
  or one the operator configured. In open mode nothing else is accepted, since a page whose
  name an attacker re-pointed at 127.0.0.1 (DNS rebinding) passes the same-origin check.
- :func:`origin_allowed`: a browser page may open a WebSocket only from the same origin
  (the ``Origin``'s host and port equal the ``Host`` header) or from a configured origin.
  No ``Origin`` header: not a browser, allowed (a script could send any Origin anyway; the
  check protects browser users from pages that would borrow their cookie or their
  loopback gateway).
- :func:`find_token`: the token, from (in order) ``Authorization: Bearer``, the ``token``
  query parameter, the ``resofleet_token`` cookie.
- :func:`login_cookie`, :func:`logout_cookie`, :func:`login_page`: ``GET /login?token=``
  for browser pages that cannot add a query (the seed's own page).
- :func:`fetch_allowed`: ``/login`` and ``/logout`` change the browser's cookie, so only
  the user (an address typed, a bookmark) or the gateway's own pages may ask for them, as
  the browser's ``Sec-Fetch-Site`` and ``Origin`` headers tell: another site's page that
  loads ``/login?token=<its own>`` would otherwise sign the victim in as the attacker
  (login CSRF). They are GET routes because the WebSocket server in front reads GET
  requests only; these checks take the place of POST with a CSRF token.
"""

from __future__ import annotations

import html
import ipaddress
import math
from collections.abc import Iterable, Sequence
from typing import Final, Literal
from urllib.parse import parse_qsl, urlsplit

from .identity import Principal
from .security import Network

__all__ = [
    "COOKIE",
    "TokenSource",
    "client_address",
    "fetch_allowed",
    "find_token",
    "host_allowed",
    "is_trusted",
    "login_cookie",
    "login_page",
    "logout_cookie",
    "message_page",
    "origin_allowed",
    "parse_cookies",
]

#: The cookie ``GET /login`` sets and the handshake reads.
COOKIE: Final = "resofleet_token"
#: Longest token read from a request, in characters; a real one is a few hundred. The
#: ``auth`` message has the same bound (contracts.Auth).
MAX_TOKEN: Final = 8192
#: ``X-Forwarded-For`` entries looked at, from the right: a chain of proxies is short;
#: a header with thousands of entries is an attack on the parser.
MAX_FORWARDED: Final = 32

TokenSource = Literal["header", "query", "cookie"]
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


# --------------------------------------------------------------------------------------
# client address


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a peer or an ``X-Forwarded-For`` entry (``[v6]:port`` and
    ``v4:port`` forms accepted); IPv4-mapped IPv6 becomes IPv4."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4 with a port
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def is_trusted(peer: str, trusted_proxies: Sequence[Network]) -> bool:
    """Whether ``peer`` (an address as the socket gives it) is a trusted proxy."""
    ip = _ip(peer)
    return ip is not None and bool(trusted_proxies) and _trusted(ip, trusted_proxies)


def client_address(
    peer: str, forwarded_for: Iterable[str], trusted_proxies: Sequence[Network]
) -> str:
    """The client's address (see the module docstring).

    ``forwarded_for``: every ``X-Forwarded-For`` header value, in the order received.
    When every entry is a trusted proxy the left-most one is the client; an entry that is
    not an address stops the walk at the last good hop.
    """
    ip = _ip(peer)
    if ip is None:
        return peer
    if not trusted_proxies or not _trusted(ip, trusted_proxies):
        return str(ip)
    entries = [e for value in forwarded_for for e in value.split(",") if e.strip()]
    for entry in reversed(entries[-MAX_FORWARDED:]):
        hop = _ip(entry)
        if hop is None:
            break
        ip = hop
        if not _trusted(hop, trusted_proxies):
            break
    return str(ip)


# --------------------------------------------------------------------------------------
# origin


def _origin(text: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin, default ports filled in; None if malformed."""
    try:
        parts = urlsplit(text.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return parts.scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS[parts.scheme]


def _host(text: str, default_port: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit("//" + text.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port if port is not None else default_port


def _loopback_name(name: str) -> bool:
    """``localhost``, a name under ``.localhost`` (browsers resolve both to loopback
    themselves, never through DNS), or a loopback address."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host: str | None, *, open_mode: bool, hosts: Iterable[str]) -> bool:
    """Whether a request's ``Host`` header names this gateway (see the module docstring).

    Loopback names and addresses, and the configured ``hosts``, always do. In open mode
    nothing else does; with a secret and no ``hosts`` configured, any name does.
    """
    configured = tuple(hosts)
    if host is None:
        return not open_mode and not configured
    parsed = _host(host, 0)
    if parsed is None:
        return False
    name = parsed[0].rstrip(".")
    if _loopback_name(name) or name in configured:
        return True
    return not open_mode and not configured


#: ``Sec-Fetch-Site`` values of a request the user or the gateway's own pages made.
_OWN_FETCH: Final = frozenset({"same-origin", "none"})


def fetch_allowed(
    sec_fetch_site: str | None, origin: str | None, host: str | None, allowed: Iterable[str]
) -> bool:
    """Whether a browser request that changes the session (``/login``, ``/logout``) comes
    from the user or from the gateway's own origin (see the module docstring). Clients that
    send neither header (scripts, old browsers) are allowed: they are not a victim's
    browser driven by another site."""
    if sec_fetch_site is not None and sec_fetch_site.strip().lower() not in _OWN_FETCH:
        return False
    return origin_allowed(origin, host, allowed)


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a handshake with this ``Origin`` may proceed (see the module docstring).

    Same origin: the Origin's host and port equal the ``Host`` header's. A ``Host``
    without a port means the default port of the scheme the browser used, which is the
    Origin's scheme for a same-origin page (behind a TLS-terminating proxy the gateway
    itself cannot know it). ``allowed``: configured origins, ``scheme://host[:port]``.
    """
    if origin is None:
        return True
    parsed = _origin(origin)
    if parsed is None:
        return False  # "null" (sandboxed frames, file: pages) and garbage
    scheme, o_host, o_port = parsed
    if host is not None and _host(host, _DEFAULT_PORTS[scheme]) == (o_host, o_port):
        return True
    return any(_origin(a) == parsed for a in allowed)


# --------------------------------------------------------------------------------------
# token


def parse_cookies(headers: Iterable[str]) -> dict[str, str]:
    """``name=value`` pairs of ``Cookie`` headers; the first of a repeated name wins.

    Hand-written rather than :mod:`http.cookies`, which gives up on a whole header when
    one cookie set by some other application on the same host is malformed.
    """
    cookies: dict[str, str] = {}
    for header in headers:
        for part in header.split(";"):
            name, sep, value = part.partition("=")
            name, value = name.strip(), value.strip()
            if sep and name and name not in cookies:
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                cookies[name] = value
    return cookies


def find_token(
    authorization: str | None, query: str, cookies: Iterable[str]
) -> tuple[str, TokenSource] | None:
    """The token a handshake presents and where it came from, or None.

    In order: ``Authorization: Bearer T``, ``?token=T``, the :data:`COOKIE` cookie. An
    empty value counts as absent; an over-long one is returned as is (and then refused).
    """
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), "header"
    for name, value in parse_qsl(query, keep_blank_values=True, max_num_fields=64):
        if name == "token" and value:
            return value, "query"
    value = parse_cookies(cookies).get(COOKIE)
    if value:
        return value, "cookie"
    return None


# --------------------------------------------------------------------------------------
# /login and /logout


def login_cookie(token: str, principal: Principal, *, now: float, secure: bool) -> str:
    """The ``Set-Cookie`` value that stores ``token`` until it expires.

    HttpOnly (page scripts cannot read it), SameSite=Strict (another site's page cannot
    make the browser send it), Secure when the gateway serves TLS.
    """
    max_age = 0 if principal.expires is None else max(0, math.floor(principal.expires - now))
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    return cookie + ("; Secure" if secure else "")


def logout_cookie(*, secure: bool) -> str:
    cookie = f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    return cookie + ("; Secure" if secure else "")


def message_page(title: str, *lines: str) -> str:
    """A small HTML page; every piece of text is escaped."""
    body = "\n".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body><h1>{html.escape(title)}</h1>\n"
        f"{body}\n</body></html>\n"
    )


def login_page(principal: Principal) -> str:
    scope = "every server" if principal.servers == ("*",) else "servers " + ", ".join(principal.servers)
    return message_page(
        "resofleet: logged in",
        f"Logged in as {principal.sub} ({principal.role.label}, {scope}).",
        "This browser now presents the token to /ws on this gateway; GET /logout forgets it.",
    )
