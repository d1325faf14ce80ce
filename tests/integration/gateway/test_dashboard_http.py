"""The dashboard over HTTP from a real gateway (LocalBus and RabbitMQ): the page and every
file it loads, caching and compression, the security headers, the methods answered, the
Host check, and the JSON answers /login and /logout give the page's fetch."""

from __future__ import annotations

import asyncio
import gzip
import json
import re


from resofleet.contracts import Role
from resofleet.gateway import Security
from resofleet.gateway.tokens import Keyring
from resofleet.audit import AuditLog

from .client import WAIT, Client

KEYRING = Keyring(("c" * 43,))
#: What the page's own fetch sends: same origin, JSON wanted.
PAGE_FETCH = {"Accept": "application/json", "Sec-Fetch-Site": "same-origin"}


async def http(
    port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on 127.0.0.1: (status, headers with lower-case names, body)."""
    sent = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{name}: {value}\r\n" for name, value in sent.items())
        writer.write(f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
    raw, _, body = data.partition(b"\r\n\r\n")
    lines = raw.decode().split("\r\n")
    received: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        received.setdefault(name.strip().lower(), value.strip())
    return int(lines[0].split()[1]), received, body


def security_headers_ok(headers: dict[str, str], port: int) -> None:
    policy = headers["content-security-policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert f"connect-src 'self' ws://127.0.0.1:{port} wss://127.0.0.1:{port};" in policy
    assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


async def test_the_page_and_every_module_it_loads_are_served(start_gateway):
    """GET / is the page; each script, stylesheet and icon it names, and each module those
    import, answers 200 with its type and the security headers."""
    gateway = await start_gateway()
    status, headers, body = await http(gateway.port, "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    security_headers_ok(headers, gateway.port)
    wanted = set(re.findall(r'(?:src|href)="(/[^"]+)"', body.decode()))
    assert {"/app/main.js", "/app/style.css"} <= wanted
    seen: set[str] = set()
    while wanted:
        path = wanted.pop()
        seen.add(path)
        status, headers, body = await http(gateway.port, path)
        assert status == 200, path
        security_headers_ok(headers, gateway.port)
        if path.endswith(".js"):
            assert headers["content-type"] == "text/javascript; charset=utf-8"
            for target in re.findall(r"""(?:from|import)\s*['"]([^'"]+)['"]""", body.decode()):
                resolved = target if target.startswith("/") else path.rsplit("/", 1)[0] + "/" + target.removeprefix("./")
                if resolved not in seen:
                    wanted.add(resolved)
    assert any(p.startswith("/vendor/preact@") for p in seen)


async def test_caching_validators_and_lifetimes(start_gateway):
    """The page and the app revalidate (ETag, Last-Modified, 304); vendored files, whose
    path names their version, are immutable for a year."""
    gateway = await start_gateway()
    _, page, _ = await http(gateway.port, "/")
    assert page["cache-control"] == "no-cache" and page["etag"] and page["last-modified"]
    status, again, body = await http(gateway.port, "/", headers={"If-None-Match": page["etag"]})
    assert (status, body) == (304, b"") and again["etag"] == page["etag"]
    status, _, _ = await http(gateway.port, "/", headers={"If-Modified-Since": page["last-modified"]})
    assert status == 304
    status, _, _ = await http(gateway.port, "/", headers={"If-None-Match": '"old"'})
    assert status == 200
    _, vendor, _ = await http(gateway.port, "/vendor/preact@10.29.8/preact.module.js")
    assert vendor["cache-control"] == "public, max-age=31536000, immutable"


async def test_gzip_only_for_clients_that_accept_it(start_gateway):
    gateway = await start_gateway()
    _, plain_headers, plain = await http(gateway.port, "/app/main.js")
    status, headers, packed = await http(gateway.port, "/app/main.js", headers={"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain_headers
    assert gzip.decompress(packed) == plain and len(packed) < len(plain)
    assert int(headers["content-length"]) == len(packed)
    assert headers["vary"] == "Accept-Encoding"


async def test_head_has_no_body_and_other_methods_are_405(start_gateway):
    gateway = await start_gateway()
    status, headers, body = await http(gateway.port, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = await http(gateway.port, "/", method=method)
        assert status == 405 and headers["allow"] == "GET, HEAD"
        security_headers_ok(headers, gateway.port)


async def test_an_open_gateway_serves_its_dashboard_to_loopback_names_only(start_gateway):
    """The Host check applies to the dashboard as to the rest: a page reached under a
    rebinding name gets 421, not the dashboard."""
    gateway = await start_gateway()
    status, _, _ = await http(gateway.port, "/", headers={"Host": f"evil.example:{gateway.port}"})
    assert status == 421
    status, _, _ = await http(gateway.port, "/", headers={"Host": f"localhost:{gateway.port}"})
    assert status == 200


async def test_login_json_in_open_mode_says_open_admin(start_gateway):
    gateway = await start_gateway()
    status, headers, body = await http(gateway.port, "/login", headers=PAGE_FETCH)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"signed_in": True, "sub": "local", "role": "admin", "expires": None, "open": True}
    assert "set-cookie" not in headers



async def test_login_json_takes_the_token_in_a_header_so_no_address_holds_it(start_gateway):
    """The page signs in with ``Authorization: Bearer``: an address with the token lands in
    every access log on the way (the compose fleet's haproxy logs each request line), a
    header does not. Answered as ?token= is: who, the cookie; a refused one 401."""
    gateway = await start_gateway(security=Security(keyring=KEYRING))
    token = KEYRING.issue(role=Role.VIEWER, sub="vera", ttl=600)
    status, headers, body = await http(
        gateway.port, "/login", headers={**PAGE_FETCH, "Authorization": f"Bearer {token}"}
    )
    assert status == 200 and (json.loads(body)["signed_in"], json.loads(body)["sub"]) == (True, "vera")
    assert headers["set-cookie"].startswith(f"resofleet_token={token};")
    status, headers, body = await http(
        gateway.port, "/login", headers={**PAGE_FETCH, "Authorization": "Bearer nonsense"}
    )
    assert status == 401 and json.loads(body)["signed_in"] is False and "set-cookie" not in headers

async def test_login_json_signs_in_says_who_and_signs_out(start_gateway, tmp_path):
    """The page's fetch: /login?token= answers who and sets the HttpOnly cookie; /login
    with the cookie answers who it names (and without one, nobody, 200, not audited); a
    refused token is 401 with the reason, audited; /logout clears; another site: 403."""
    audit = AuditLog(tmp_path / "gateway.jsonl", source="gateway", flush_interval=0.01)
    await audit.start()
    try:
        gateway = await start_gateway(security=Security(keyring=KEYRING), audit=audit)
        port = gateway.port
        token = KEYRING.issue(role=Role.OPERATOR, sub="olga", ttl=600)

        status, _, body = await http(port, "/login", headers=PAGE_FETCH)
        assert status == 200 and json.loads(body)["signed_in"] is False

        status, headers, body = await http(port, f"/login?token={token}", headers=PAGE_FETCH)
        answer = json.loads(body)
        assert status == 200 and (answer["signed_in"], answer["sub"], answer["role"], answer["open"]) == (True, "olga", "operator", False)
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"resofleet_token={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        pair = cookie.split(";")[0]

        status, headers, body = await http(port, "/login", headers={**PAGE_FETCH, "Cookie": pair})
        assert status == 200 and json.loads(body)["sub"] == "olga" and "set-cookie" not in headers
        async with await Client.connect(gateway.url, additional_headers={"Cookie": pair}) as client:
            assert (await client.request({"type": "get_servers"}))["type"] == "servers_update"

        status, _, body = await http(port, "/login?token=nonsense", headers=PAGE_FETCH)
        assert status == 401 and json.loads(body)["signed_in"] is False and json.loads(body)["error"]

        status, headers, _ = await http(port, "/logout", headers=PAGE_FETCH)
        assert status == 200 and "Max-Age=0" in headers["set-cookie"]

        cross = {**PAGE_FETCH, "Sec-Fetch-Site": "cross-site"}
        for path in (f"/login?token={token}", "/login", "/logout"):
            status, headers, _ = await http(port, path, headers=cross)
            assert status == 403 and "set-cookie" not in headers

        await audit.flush()
        records = [json.loads(line) for line in (tmp_path / "gateway.jsonl").read_text().splitlines()]
        logins = [r for r in records if r.get("command") == "login"]
        assert len(logins) == 1 and logins[0]["outcome"] == "handshake_refused"
    finally:
        await audit.close()
