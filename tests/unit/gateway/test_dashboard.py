"""The dashboard's answers (resofleet.gateway.dashboard): pure, no sockets."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest

from resofleet.gateway.dashboard import (
    APP_CACHE,
    STATIC,
    VENDOR_CACHE,
    Dashboard,
    content_security_policy,
    gzip_accepted,
)

LONG_JS = "export const x = 1;\n" * 100


@pytest.fixture
def dashboard(tmp_path: Path) -> Dashboard:
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>\n" * 20)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.js").write_text(LONG_JS)
    (tmp_path / "app" / ".hidden").write_text("no")
    vendor = tmp_path / "vendor" / "lib@1.2.3"
    vendor.mkdir(parents=True)
    (vendor / "lib.js").write_text("x")  # too small to be worth gzip
    (vendor / "LICENSE").write_text("MIT")
    return Dashboard.load(tmp_path)


def headers(reply) -> dict[str, str]:
    return dict(reply.headers)


def test_index_is_served_at_the_root_and_dot_files_are_not(dashboard):
    """``/`` is index.html; every other file at its own path; dot-files and paths outside
    the folder are simply not there."""
    assert set(dashboard.assets) == {"/", "/app/main.js", "/vendor/lib@1.2.3/lib.js", "/vendor/lib@1.2.3/LICENSE"}
    assert dashboard.answer("/index.html", method="GET") is None
    assert dashboard.answer("/app/../index.html", method="GET") is None
    reply = dashboard.answer("/", method="GET")
    assert reply is not None and reply.status == 200
    assert headers(reply)["Content-Type"] == "text/html; charset=utf-8"
    assert reply.body.startswith(b"<!doctype html>")


def test_every_answer_carries_the_security_headers(dashboard):
    """CSP, nosniff, no-referrer and no framing on pages, scripts, 304s and 405s alike."""
    replies = [
        dashboard.answer("/", method="GET", host="127.0.0.1:8000"),
        dashboard.answer("/app/main.js", method="HEAD"),
        dashboard.answer("/", method="GET", if_none_match="*"),
        dashboard.answer("/", method="POST"),
    ]
    for reply in replies:
        assert reply is not None
        h = headers(reply)
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "no-referrer"
        assert h["X-Frame-Options"] == "DENY"


def test_the_policy_allows_no_inline_code_and_connects_only_to_the_gateway():
    policy = content_security_policy("127.0.0.1:8000")
    directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'", "ws://127.0.0.1:8000", "wss://127.0.0.1:8000"]
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy


@pytest.mark.parametrize("host", [None, "evil.example; script-src *", "a b", "x" * 300, "h:99999999"])
def test_a_strange_host_header_never_reaches_the_policy(host):
    """Only a plain host[:port] is written into connect-src; anything else: 'self' alone."""
    policy = content_security_policy(host)
    assert "connect-src 'self';" in policy
    assert policy.count("script-src") == 1


def test_other_methods_are_405_with_allow(dashboard):
    reply = dashboard.answer("/", method="DELETE")
    assert reply is not None and reply.status == 405
    assert headers(reply)["Allow"] == "GET, HEAD"


def test_head_has_the_headers_of_get_and_no_body(dashboard):
    get = dashboard.answer("/app/main.js", method="GET")
    head = dashboard.answer("/app/main.js", method="HEAD")
    assert get is not None and head is not None
    assert head.body == b"" and headers(head) == headers(get)
    assert int(headers(head)["Content-Length"]) == len(get.body)


def test_vendored_files_are_immutable_and_the_app_revalidates(dashboard):
    assert headers(dashboard.answer("/vendor/lib@1.2.3/lib.js", method="GET"))["Cache-Control"] == VENDOR_CACHE
    assert headers(dashboard.answer("/app/main.js", method="GET"))["Cache-Control"] == APP_CACHE
    assert headers(dashboard.answer("/", method="GET"))["Cache-Control"] == APP_CACHE


def test_gzip_when_accepted_precomputed_and_equal_to_the_file(dashboard):
    plain = dashboard.answer("/app/main.js", method="GET")
    zipped = dashboard.answer("/app/main.js", method="GET", accept_encoding="br, gzip;q=0.8")
    assert plain is not None and zipped is not None
    assert "Content-Encoding" not in headers(plain)
    assert headers(zipped)["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == plain.body == LONG_JS.encode()
    assert len(zipped.body) < len(plain.body)
    assert headers(zipped)["Vary"] == "Accept-Encoding"
    assert headers(zipped)["ETag"] != headers(plain)["ETag"]
    # precomputed: the same bytes object every time
    again = dashboard.answer("/app/main.js", method="GET", accept_encoding="gzip")
    assert again is not None and again.body is zipped.body
    # a file too small to gain is sent as is
    small = dashboard.answer("/vendor/lib@1.2.3/lib.js", method="GET", accept_encoding="gzip")
    assert small is not None and "Content-Encoding" not in headers(small)


@pytest.mark.parametrize(("header", "accepted"), [
    (None, False), ("", False), ("gzip", True), ("GZIP", True), ("deflate, gzip;q=0.5", True),
    ("gzip;q=0", False), ("gzip; q=0.0", False), ("*", True), ("*;q=0", False),
    ("identity", False), ("gzip;q=0, *", False), ("br, *;q=0.1", True), ("gzip;q=x", False),
])
def test_accept_encoding(header, accepted):
    assert gzip_accepted(header) is accepted


def test_if_none_match_gives_304_without_a_body(dashboard):
    first = dashboard.answer("/app/main.js", method="GET")
    assert first is not None
    etag = headers(first)["ETag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        reply = dashboard.answer("/app/main.js", method="GET", if_none_match=header)
        assert reply is not None and reply.status == 304 and reply.body == b""
        assert "Content-Length" not in headers(reply)
    stale = dashboard.answer("/app/main.js", method="GET", if_none_match='"stale"')
    assert stale is not None and stale.status == 200


def test_if_modified_since(dashboard):
    first = dashboard.answer("/", method="GET")
    assert first is not None
    modified = headers(first)["Last-Modified"]
    assert dashboard.answer("/", method="GET", if_modified_since=modified).status == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert dashboard.answer("/", method="GET", if_modified_since=old).status == 200
    assert dashboard.answer("/", method="GET", if_modified_since="garbage").status == 200
    # If-None-Match wins over If-Modified-Since
    assert dashboard.answer("/", method="GET", if_none_match='"x"', if_modified_since=modified).status == 200


def test_the_shipped_dashboard_has_its_page_app_and_licensed_vendor_code():
    """The package's own static folder: the page, the app's modules, and each vendored
    library in a folder naming its version, with its licence."""
    shipped = Dashboard.load(STATIC)
    assert {"/", "/app/main.js", "/app/style.css"} <= set(shipped.assets)
    vendored = {p.split("/")[2] for p in shipped.assets if p.startswith("/vendor/")}
    assert vendored and all("@" in v for v in vendored)
    for folder in vendored:
        assert f"/vendor/{folder}/LICENSE" in shipped.assets
    page = shipped.assets["/"].body.decode()
    assert "<script>" not in page and "style=" not in page and "<style" not in page


def _vendor_script():
    """deploy/dev/vendor-browser.py, loaded as a module (its name has a dash)."""
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "deploy" / "dev" / "vendor-browser.py"
    spec = importlib.util.spec_from_file_location("vendor_browser", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_vendored_files_are_what_the_refresh_script_pins():
    """gateway/static/vendor holds one folder per pinned package, named name@version, with
    exactly the files the script copies (the licence among them)."""
    script = _vendor_script()
    vendor = STATIC / "vendor"
    assert {p.name for p in vendor.iterdir()} == {p.folder for p in script.PACKAGES}
    for package in script.PACKAGES:
        assert {p.name for p in (vendor / package.folder).iterdir()} == set(package.files.values())
        assert "LICENSE" in package.files.values()


def test_every_import_the_browser_sees_is_a_path():
    """No bare specifier (``from "preact"``) is left in a served module: without an import
    map (an inline script the policy refuses) the browser could not resolve it."""
    import re

    specifier = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']""")
    for path in STATIC.rglob("*.js"):
        for target in specifier.findall(path.read_text(encoding="utf-8")):
            assert target.startswith(("/", "./", "../")), (path, target)


def test_the_refresh_script_rewrites_known_bare_imports_and_refuses_others():
    script = _vendor_script()
    assert script.rewrite('import{a}from"preact";', {"preact": "./preact.module.js"}) == (
        'import{a}from"./preact.module.js";'
    )
    with pytest.raises(SystemExit, match="unknown bare import 'react'"):
        script.rewrite("import x from 'react'", {})


def test_the_fleet_command_asks_first_for_everything_a_viewer_may_not_run():
    """bulk.js's READ_ONLY (run without asking) is exactly the console commands the
    contracts give the viewer role: a new read-only command, or one that stops being
    read-only, changes both."""
    import re

    from resofleet.contracts import Role
    from resofleet.contracts.permissions import COMMAND_ROLES

    source = (STATIC / "app" / "bulk.js").read_text()
    block = re.search(r"READ_ONLY = new Set\(\[(.*?)\]\)", source, re.S)
    assert block is not None
    listed = set(re.findall(r"'([a-z]+)'", block.group(1)))
    assert listed == {name for name, role in COMMAND_ROLES.items() if role is Role.VIEWER}
