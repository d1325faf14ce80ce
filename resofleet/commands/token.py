"""``resofleet token``: issue and revoke the tokens clients present, and make secrets.

::

    resofleet token issue --role R [--servers PATTERN ...] [--ttl 30d] [--sub NAME]
    resofleet token revoke ID|TOKEN [--amqp URL]
    resofleet token secret

``issue`` signs with the first secret of ``RESOFLEET_SECRET`` or ``[gateway] secret``
(the same one the gateways hold) and prints the token alone on stdout, so that
``TOKEN=$(resofleet token issue --role viewer)`` works; its id (``jti``) and expiry go to
stderr. ``revoke`` publishes the id on the bus: every gateway connected to it refuses the
token from then on and closes the connections that use it. Given the token itself rather
than its id, the revocation is kept only until the token expires. ``secret`` prints a
fresh 256-bit secret.

Only argparse and the standard library are imported at module level.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import (
    FAILURE,
    CommandError,
    add_amqp_argument,
    add_config_argument,
    broker_url,
    connection_name,
    load_config,
    started_bus,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "token",
        help="issue or revoke client tokens, or make a secret",
        description="Issue and revoke the signed tokens clients present to gateways.",
    )
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    issue = sub.add_parser("issue", help="print a new signed token")
    add_config_argument(issue)
    issue.add_argument(
        "--role", required=True, choices=["viewer", "moderator", "operator", "admin"],
        help="what the holder may do (each role includes the ones before it)",
    )
    issue.add_argument(
        "--servers", nargs="+", metavar="PATTERN",
        help="glob patterns of the server ids the holder may see, e.g. 'eu-*' (default: all)",
    )
    issue.add_argument("--ttl", default="30d", help="lifetime: 30d, 12h, 90m, seconds (default 30d)")
    issue.add_argument("--sub", default="", help="who holds it, for logs and the audit log")
    issue.set_defaults(func=_issue)

    revoke = sub.add_parser("revoke", help="make every gateway refuse a token now")
    add_config_argument(revoke)
    revoke.add_argument("token", metavar="ID", help="the token's id (jti), or the token itself")
    add_amqp_argument(revoke)
    revoke.set_defaults(func=_revoke)

    secret = sub.add_parser("secret", help="print a fresh secret for RESOFLEET_SECRET")
    secret.set_defaults(func=_secret)


def _secret(args: argparse.Namespace) -> int:
    from resofleet.gateway.tokens import new_secret

    print(new_secret())
    return 0


def _issue(args: argparse.Namespace) -> int:
    import getpass
    import time

    import jwt

    from resofleet.contracts import Role
    from resofleet.gateway.tokens import Keyring, parse_ttl

    config = load_config(args)
    if not config.gateway.secrets:
        raise CommandError(
            "no secret to sign with: set RESOFLEET_SECRET (make one with `resofleet token "
            f"secret`) or [gateway] secret in {config.source}"
        )
    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        raise CommandError(f"--ttl: {exc}") from None
    sub = args.sub or f"{getpass.getuser()}-{args.role}"
    try:
        token = Keyring(config.gateway.secrets).issue(
            role=Role.parse(args.role), sub=sub, servers=args.servers, ttl=ttl
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    claims = jwt.decode(token, options={"verify_signature": False})
    expires = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(claims["exp"]))
    scope = " ".join(args.servers) if args.servers else "all servers"
    print(
        f"resofleet: token {claims['jti']} for {sub} ({args.role}, {scope}), expires {expires}",
        file=sys.stderr,
    )
    print(token, flush=True)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from resofleet.gateway.tokens import LEEWAY, MAX_TTL

    config = load_config(args)
    url = broker_url(args, config, missing=(
        "revoking goes over the message bus: pass --amqp URL or set RESOFLEET_AMQP_URL "
        "(with `resofleet up` there is no bus: rotate the secret, or list the id in "
        "[gateway] revoked and restart)"
    ))
    jti, until = args.token, time.time() + MAX_TTL
    if args.token.count(".") == 2:  # the token itself: revoke it until it expires
        import jwt

        try:
            claims = jwt.decode(args.token, options={"verify_signature": False})
            jti, until = str(claims["jti"]), float(claims["exp"]) + LEEWAY
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            raise CommandError("that is not a resofleet token; pass the token or its id (jti)") from None
    if not jti or len(jti) > 128 or not jti.isprintable():
        raise CommandError("a token id is 1-128 printable characters")
    return asyncio.run(_publish(url, config.bus_prefix, jti, until))


async def _publish(url: str, prefix: str, jti: str, until: float) -> int:
    from resofleet.bus import BusError
    from resofleet.contracts import Revoke

    async with started_bus(url, prefix=prefix, name=connection_name("token")) as bus:
        try:
            await bus.broadcast(Revoke(jti=jti, until=until))
        except BusError as exc:
            raise CommandError(str(exc), status=FAILURE) from None
    print(f"resofleet: revoked token {jti} on every gateway of the bus", flush=True)
    return 0
