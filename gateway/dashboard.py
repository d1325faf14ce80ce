"""The dashboard's files, answered to ``GET /`` and ``GET /app/...``, ``/vendor/...``: pure.

The dashboard is static: ES modules, a stylesheet and an HTML page shipped in this package
(``static/``), which speak the public WebSocket API like any other client. This module
decides every answer from the request's method, path and headers; the edge
(:mod:`resofleet.gateway.server`) turns it into an HTTP response. No sockets, no clock
(``Date`` is the edge's business), and the files are read once.

- **What is served**: exactly the files found under ``static/`` when the gateway starts
  (read into memory, so a request can never reach another file, whatever its path);
  ``index.html`` is served as ``/``. ``GET`` and ``HEAD`` only: another method is 405.
- **Caching**: every file has a strong ``ETag`` (a hash of its bytes) and a
  ``Last-Modified``; a matching ``If-None-Match`` (or, without one, an ``If-Modified-Since``
  not older than the file) is 304. Vendored files live under a path naming their version
  (``vendor/preact@10.29.8/``), so they are cached for a year as ``immutable``; the app's
  own files are ``no-cache`` (revalidated on every load: a new gateway version is seen at
  once).
- **Compression**: text files are gzipped once, at load, and served gzipped to a client
  whose ``Accept-Encoding`` allows it (``Vary: Accept-Encoding``).
- **Security headers** on every answer: a Content-Security-Policy that allows scripts,
  styles, images and fonts from the gateway only (no inline script or style, no ``eval``),
  WebSocket connections to the gateway only, no frames, no plugins, no ``<base>``, no form
  submission, and Trusted Types required (no HTML sink can be fed a string);
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY`` and ``Cross-Origin-Opener-Policy`` /
  ``Cross-Origin-Resource-Policy: same-origin``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Final

__all__ = [
    "APP_CACHE",
    "STATIC",
    "VENDOR_CACHE",
    "Asset",
    "Dashboard",
    "Reply",
    "content_security_policy",
    "gzip_accepted",
]

#: Where the dashboard's files are, inside the installed package.
STATIC: Final = Path(__file__).resolve().parent / "static"
#: ``Cache-Control`` of vendored files: their path names their version, so a file at a
#: path never changes; a year is the longest value browsers honour.
VENDOR_CACHE: Final = "public, max-age=31536000, immutable"
#: ``Cache-Control`` of the app's own files and the page: kept, but revalidated on every
#: use (a 304 costs one round trip), so a new gateway's dashboard is seen at once.
APP_CACHE: Final = "no-cache"
#: Smallest file worth compressing, in bytes: below it gzip's header eats the gain.
MIN_GZIP: Final = 256
#: gzip level: files are compressed once at start, so the smallest output is worth it.
GZIP_LEVEL: Final = 9
#: Methods answered; the edge reads only requests without a body.
METHODS: Final = ("GET", "HEAD")

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    "": "text/plain; charset=utf-8",  # LICENSE
}
_TEXT: Final = frozenset({".html", ".js", ".css", ".svg", ".json", ""})
#: A ``Host`` header that may be written into the policy as is (a name or address and a
#: port); anything else leaves the policy at ``'self'``.
_HOST: Final = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


@dataclass(frozen=True, slots=True)
class Asset:
    """One file, as it is served."""

    body: bytes
    #: The gzipped body, or ``None`` when not worth it (binary, small, or no smaller).
    gzipped: bytes | None
    content_type: str
    #: Strong validator of the plain body; the gzipped one is this with ``-gz``.
    etag: str
    #: The file's modification time, in whole seconds since the epoch.
    modified: int
    cache_control: str

    @property
    def etag_gzip(self) -> str:
        return self.etag[:-1] + '-gz"'


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer: a status, headers in order, and the body (empty for HEAD and 304)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def content_security_policy(host: str | None) -> str:
    """The page's policy. ``connect-src`` names the gateway's own ``ws:``/``wss:`` origin
    besides ``'self'`` (which browsers before CSP 3 do not extend to WebSockets), taken from
    the ``Host`` header the edge has already checked, when it is a plain host and port."""
    connect = "'self'"
    if host is not None and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"font-src 'self'; connect-src {connect}; manifest-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'; object-src 'none'; "
        "require-trusted-types-for 'script'; trusted-types 'none'"
    )


def gzip_accepted(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip: ``gzip`` (or ``x-gzip``) with a non-zero
    q-value, or ``*`` with one while gzip itself is not refused."""
    if not accept_encoding:
        return False
    star = False
    for item in accept_encoding.split(",")[:64]:
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        coding = coding.lower()
        if coding in ("gzip", "x-gzip"):
            return q > 0.0
        if coding == "*":
            star = q > 0.0
    return star


def _etag_matches(header: str, tags: tuple[str, ...]) -> bool:
    """``If-None-Match`` (weak comparison, as RFC 9110 says for it) against ``tags``."""
    if header.strip() == "*":
        return True
    wanted = {t.strip().removeprefix("W/") for t in header.split(",")[:64]}
    return any(tag in wanted for tag in tags)


def _not_modified_since(header: str, modified: int) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    return since.tzinfo is not None and modified <= since.timestamp()


def _load(path: Path, relative: str) -> Asset:
    body = path.read_bytes()
    suffix = path.suffix.lower()
    gzipped: bytes | None = None
    if suffix in _TEXT and len(body) >= MIN_GZIP:
        packed = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        gzipped = packed if len(packed) < len(body) else None
    vendored = relative.startswith("vendor/")
    return Asset(
        body=body,
        gzipped=gzipped,
        content_type=_TYPES.get(suffix, "application/octet-stream"),
        etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"',
        modified=int(path.stat().st_mtime),
        cache_control=VENDOR_CACHE if vendored else APP_CACHE,
    )


class Dashboard:
    """The files under one folder, by URL path. :meth:`load` reads them (once per folder)."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    @staticmethod
    @functools.cache
    def load(root: Path = STATIC) -> Dashboard:
        """Every file under ``root`` (dot-files skipped); ``index.html`` is ``/``."""
        assets: dict[str, Asset] = {}
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                relative = path.relative_to(root).as_posix()
                if not path.is_file() or any(p.startswith(".") for p in relative.split("/")):
                    continue
                url = "/" if relative == "index.html" else "/" + relative
                assets[url] = _load(path, relative)
        return Dashboard(assets)

    def __contains__(self, path: str) -> bool:
        return path in self.assets

    def answer(
        self,
        path: str,
        *,
        method: str,
        host: str | None = None,
        accept_encoding: str | None = None,
        if_none_match: str | None = None,
        if_modified_since: str | None = None,
    ) -> Reply | None:
        """The reply to a request for ``path`` (without its query), or ``None`` when no
        file has that path (the edge answers it, usually 404)."""
        asset = self.assets.get(path)
        if asset is None:
            return None
        headers = [
            ("Content-Security-Policy", content_security_policy(host)),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Resource-Policy", "same-origin"),
        ]
        if method not in METHODS:
            body = f"method not allowed: {path} answers {' and '.join(METHODS)}\n".encode()
            headers += [("Allow", ", ".join(METHODS)), ("Cache-Control", "no-store"),
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(body)))]
            return Reply(405, headers, body)
        zipped = asset.gzipped is not None and gzip_accepted(accept_encoding)
        etag = asset.etag_gzip if zipped else asset.etag
        headers += [
            ("Cache-Control", asset.cache_control),
            ("ETag", etag),
            ("Last-Modified", formatdate(asset.modified, usegmt=True)),
        ]
        if asset.gzipped is not None:
            headers.append(("Vary", "Accept-Encoding"))
        if if_none_match is not None:
            fresh = _etag_matches(if_none_match, (asset.etag, asset.etag_gzip))
        else:
            fresh = if_modified_since is not None and _not_modified_since(
                if_modified_since, asset.modified
            )
        if fresh:
            return Reply(304, headers, b"")
        body = asset.gzipped if zipped and asset.gzipped is not None else asset.body
        headers.append(("Content-Type", asset.content_type))
        if zipped:
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        return Reply(200, headers, b"" if method == "HEAD" else body)
