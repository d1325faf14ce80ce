"""A webhook receiver for the compose fleet's notifier (compose profile "webhooks"):
standard-library Python, one JSON line on stdout per POST with whether its signature
verifies, so `docker logs` shows what the notifier sends. A stand-in for your endpoint,
not one: it keeps nothing and answers 204 to every signed POST.

    {"event": "server_down", "server": "a1", "delivery": "4f0c...", "verified": true, "text": "..."}

The secret is $RESOFLEET_WEBHOOK_SECRET (the notifier's, from deploy/.env); it listens on
0.0.0.0:$PORT (8080). A POST whose signature does not verify gets 401 (the notifier does
not retry it) and is logged with "verified": false.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

#: Seconds a signature's timestamp may be off: the README's advice against replays.
TOLERANCE: Final = 300.0
#: Bytes a body may have at most: a notice is a few hundred.
MAX_BODY: Final = 1 << 20
#: The port it listens on unless $PORT says otherwise.
PORT: Final = 8080


def verify(secret: str, body: bytes, header: str, *, now: float, tolerance: float = TOLERANCE) -> bool:
    """The README's check: HMAC-SHA256 over ``t.body``, and a ``t`` no older than ``tolerance``."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        stamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    # as bytes: compare_digest refuses str with characters beyond ASCII (a header may have any)
    return hmac.compare_digest(given.encode(), expected.encode()) and abs(now - stamp) <= tolerance


class Handler(BaseHTTPRequestHandler):
    secret = ""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self.send_response(413 if length else 400)
            self.end_headers()
            return
        body = self.rfile.read(length)
        ok = verify(self.secret, body, self.headers.get("X-Resofleet-Signature", ""), now=time.time())
        try:
            notice = json.loads(body)
        except ValueError:
            notice = {}
        if not isinstance(notice, dict):  # JSON, but no notice: logged as such
            notice = {}
        line = {
            "event": self.headers.get("X-Resofleet-Event"), "server": notice.get("server"),
            "delivery": self.headers.get("X-Resofleet-Delivery"), "verified": ok, "text": notice.get("text"),
        }
        print(json.dumps(line), flush=True)
        self.send_response(204 if ok else 401)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 (a health check)
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one JSON line per POST is the whole log


def main() -> int:
    secret = os.environ.get("RESOFLEET_WEBHOOK_SECRET", "")
    if not secret:
        print("webhook-receiver: RESOFLEET_WEBHOOK_SECRET is not set", file=sys.stderr)
        return 1
    Handler.secret = secret
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", PORT))), Handler)
    print(f"webhook-receiver: listening on {server.server_address[1]}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
