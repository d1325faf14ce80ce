"""``resofleet console``: an interactive terminal client for people who live in a shell.

Type a console command and it runs on the current server; live output scrolls by as the
headless prints it. Lines starting with ``/`` are the client's own:

    /worlds          the running worlds and their users
    /status          CPU, memory and state of the server
    /servers         every server this gateway sees
    /server ID       talk to server ID from now on (``/server *``: let the gateway choose)
    /bulk PATTERNS COMMAND
                     run COMMAND on every server the comma-separated glob PATTERNS match
                     (``/bulk eu-*,lab save``); COMMAND may be ``/container ACTION``
    /container ACTION  start, stop or restart the server's container (or process)
    /help, /quit

Bulk commands: ``--servers PATTERN ...`` sends every command (and ``/container``) to
every server the patterns match, as ``/bulk`` does for one line. Each server's answer is
printed with its id in brackets, then one summary line (``bulk: 3 ok; eu-2
server_offline``); a script exits 1 when any server's answer was an error.

On a terminal the live stream (``container_output``) is the view, as when attached to the
headless itself, so a command's reply is not printed twice. With stdin from a pipe or a
file (scripts), the live stream is off and the lines run one at a time: each reply is
printed before the next line is sent, and the client exits after the last reply: with 0,
or 1 if any request was answered with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import threading
from typing import Any, Final

DEFAULT_URL: Final = "ws://127.0.0.1:8000/ws"
#: Seconds a scripted session waits for its last replies after stdin ends: a little more
#: than the gateway's longest command timeout (125 s for startWorldURL and friends).
SCRIPT_DRAIN_TIMEOUT: Final = 130.0
#: Largest message accepted from the gateway, in bytes: a worlds_update of a busy server
#: or an output_history of a full ring buffer is several MB.
MAX_MESSAGE: Final = 64 * 1024 * 1024

HELP = """\
commands: any console command (worlds, users, status, listbans, ...) runs on the current server
  /worlds  /status  /servers  /server ID  /container start|stop|restart  /help  /quit
  /bulk PATTERNS COMMAND   on every server the comma-separated globs match: /bulk eu-*,lab save"""
#: The actions ``/container`` takes.
CONTAINER_ACTIONS: Final = ("start", "stop", "restart")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "console",
        help="an interactive terminal client for a gateway",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the gateway's WebSocket URL (default {DEFAULT_URL})"
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--server", metavar="ID", help="the server to talk to (default: the only one)"
    )
    target.add_argument(
        "--servers", nargs="+", metavar="PATTERN",
        help="send every command to all servers these glob patterns match, e.g. 'eu-*' lab",
    )
    parser.add_argument("--token", metavar="T", help="an access token (sent as a Bearer header)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        console = Console(
            args.url, server=args.server, servers=args.servers, token=args.token,
            interactive=interactive,
        )
        return asyncio.run(console.run())
    except KeyboardInterrupt:
        return 130


class Console:
    def __init__(
        self, url: str, *, server: str | None, token: str | None, interactive: bool,
        servers: list[str] | None = None,
    ) -> None:
        self.url = url
        self.server = server
        #: Patterns every command goes to (``--servers``): bulk requests instead of one server.
        self.servers = servers
        self.token = token
        self.interactive = interactive
        self.prompt = "> "
        self._ids = itertools.count(1)
        self._pending: dict[int, str] = {}
        #: Ids of bulk requests: several replies each, pending until ``bulk_done``.
        self._bulk: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Whether a request of this session was answered with an error (scripts exit 1).
        self.failed = False

    # -- output ----------------------------------------------------------------------

    def show(self, text: str) -> None:
        """Print ``text`` above the prompt without eating what the user is typing."""
        if not self.interactive:
            print(text, flush=True)
            return
        try:
            import readline

            typed = readline.get_line_buffer()
        except ImportError:  # pragma: no cover
            typed = ""
        sys.stdout.write(f"\r\x1b[K{text}\n{self.prompt}{typed}")
        sys.stdout.flush()

    # -- main loop -------------------------------------------------------------------

    async def run(self) -> int:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            ws = await connect(self.url, additional_headers=headers, max_size=MAX_MESSAGE, open_timeout=10)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            print(f"resofleet: cannot connect to {self.url}: {exc}", file=sys.stderr)
            return 1
        async with ws:
            lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=64)
            self._start_reader(lines)
            if self.interactive:
                print(f"connected to {self.url}; /help for help", flush=True)
                await self._subscribe(ws)
            else:
                await self._send(ws, {"type": "subscribe", "servers": []}, "subscribe")
            receiver = asyncio.create_task(self._receive(ws))
            try:
                while True:
                    getter = asyncio.create_task(lines.get())
                    done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                    if receiver in done:
                        getter.cancel()
                        break
                    line = getter.result()
                    if line is None:  # end of input
                        return 1 if self.failed and not self.interactive else 0
                    if not await self._handle(ws, line.strip()):
                        return 0
                    if not self.interactive and not await self._replied():
                        return 1
            except ConnectionClosed:
                pass
            finally:
                receiver.cancel()
            code, reason = ws.close_code, ws.close_reason
            print(f"resofleet: the gateway closed the connection ({code} {reason or ''})".rstrip(), file=sys.stderr)
            return 1

    async def _replied(self) -> bool:
        """Wait for the answers to what was sent (scripts run one line at a time)."""
        try:
            async with asyncio.timeout(SCRIPT_DRAIN_TIMEOUT):
                await self._idle.wait()
        except TimeoutError:
            print("resofleet: gave up waiting for a reply", file=sys.stderr)
            return False
        return True

    def _start_reader(self, lines: asyncio.Queue[str | None]) -> None:
        """Read stdin in a daemon thread (input() blocks; the loop must not)."""
        loop = asyncio.get_running_loop()

        def put(item: str | None) -> None:
            asyncio.run_coroutine_threadsafe(lines.put(item), loop).result()

        def read() -> None:
            try:
                if self.interactive:
                    import readline  # noqa: F401  (history and editing for input())
                while True:
                    try:
                        line = input(self.prompt) if self.interactive else sys.stdin.readline()
                    except EOFError:
                        break
                    if not self.interactive and line == "":
                        break
                    put(line)
            except Exception:  # the loop is gone: nothing left to tell
                return
            try:
                put(None)
            except Exception:
                return

        threading.Thread(target=read, name="console-stdin", daemon=True).start()

    async def _send(
        self, ws: Any, message: dict[str, Any], what: str, *, servers: list[str] | None = None
    ) -> None:
        """Send ``message``; a command or container action to ``servers`` (patterns), else
        to the ``--servers`` patterns, else to the current server."""
        import json

        request_id = next(self._ids)
        message["id"] = request_id
        servers = servers or self.servers
        if servers and message["type"] in ("command", "container"):
            message["servers"] = servers
            self._bulk.add(request_id)
        elif self.server and message["type"] not in ("get_servers", "ping", "subscribe"):
            message.setdefault("server", self.server)
        self._pending[request_id] = what
        self._idle.clear()
        await ws.send(json.dumps(message))

    async def _subscribe(self, ws: Any) -> None:
        servers: Any = [self.server] if self.server else "*"
        await self._send(ws, {"type": "subscribe", "servers": servers}, "subscribe")

    async def _handle(self, ws: Any, line: str, *, servers: list[str] | None = None) -> bool:
        """Act on one input line (for ``servers``: a ``/bulk`` line's patterns); False
        means quit."""
        if not line:
            return True
        if not line.startswith("/"):
            await self._send(ws, {"type": "command", "command": line}, line, servers=servers)
            return True
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        match name.lower():
            case "quit" | "exit" | "q":
                return False
            case "help" | "h" | "?":
                self.show(HELP)
            case "worlds" | "w":
                await self._send(ws, {"type": "get_worlds"}, "/worlds")
            case "status" | "s":
                await self._send(ws, {"type": "get_status"}, "/status")
            case "servers":
                await self._send(ws, {"type": "get_servers"}, "/servers")
            case "bulk" if servers is None:
                patterns, _, command = rest.partition(" ")
                listed = [p for p in patterns.split(",") if p]
                if not listed or not command.strip():
                    self.show("usage: /bulk PATTERNS COMMAND, e.g. /bulk eu-*,lab save")
                else:
                    return await self._handle(ws, command.strip(), servers=listed)
            case "container":
                if rest not in CONTAINER_ACTIONS:
                    self.show(f"usage: /container {'|'.join(CONTAINER_ACTIONS)}")
                else:
                    request = {"type": "container", "action": rest}
                    await self._send(ws, request, f"/container {rest}", servers=servers)
            case "server":
                if rest:
                    self.server = None if rest == "*" else rest
                    if self.interactive:
                        await self._subscribe(ws)
                self.show(f"server: {self.server or '(the only one)'}")
            case _:
                self.show(f"unknown client command /{name}; /help lists them")
        return True

    async def _receive(self, ws: Any) -> None:
        import json

        async for frame in ws:
            try:
                message = json.loads(frame)
            except ValueError:
                continue
            request_id = message.get("id")
            what = self._pending.get(request_id) if isinstance(request_id, int) else None
            bulk = request_id in self._bulk
            if what is not None and not (bulk and _one_of_many(message)):
                del self._pending[request_id]  # answered: a bulk request by its last reply
                self._bulk.discard(request_id)
            if not self._pending:
                self._idle.set()
            if what is not None and _failed(message):
                self.failed = True
            text = render(message, replying_to=what, interactive=self.interactive and not bulk)
            if text is not None and bulk and message["type"] in ("command_response", "bans_update"):
                lines = text.split("\n") if text else ["(done, no output)"]
                text = "\n".join(f"[{message['server']}] {line}" for line in lines)
            if text is not None:
                self.show(text)


def _one_of_many(message: dict[str, Any]) -> bool:
    """Whether ``message`` is one server's reply to a bulk request (more follow), not its
    last (``bulk_done``) nor an error that refused it whole (an error naming no server)."""
    return message.get("type") != "bulk_done" and "server" in message


def _failed(message: dict[str, Any]) -> bool:
    """An error, or a bulk request with a server that did not answer ``ok``."""
    if message.get("type") == "bulk_done":
        return any(result != "ok" for result in message.get("results", {}).values())
    return message.get("type") == "error"


def render_bulk(results: dict[str, str]) -> str:
    """The summary line of a bulk request: how many ``ok``, then each other result."""
    ok = sum(1 for r in results.values() if r == "ok")
    others = [f"{server} {result}" for server, result in results.items() if result != "ok"]
    return f"bulk: {ok} ok" + "".join(f"; {o}" for o in others)


def render(message: dict[str, Any], *, replying_to: str | None, interactive: bool) -> str | None:
    """The text shown for one gateway message, or ``None`` for nothing."""
    kind = message.get("type")
    server = message.get("server", "")
    if kind == "container_output":
        return str(message.get("output", ""))
    if kind == "container_output_batch":
        return "\n".join(str(line.get("output", "")) for line in message.get("lines", []))
    if replying_to is None:
        return None  # a pushed status/worlds/bans change: the live stream shows enough
    if kind == "error":
        where = f" [{server}]" if server else ""
        return f"error{where} ({message.get('code')}): {message.get('message')}"
    if kind == "command_response":
        return None if interactive else str(message.get("output", ""))
    if kind == "bans_update":
        bans = message.get("bans", [])
        if not bans:
            return "no bans"
        return "\n".join(f"{b.get('username')} ({b.get('userId')})" for b in bans)
    if kind == "worlds_update":
        return render_worlds(message.get("output", []), server)
    if kind == "status_update":
        return render_status(message.get("status", {}), server)
    if kind == "servers_update":
        return render_servers(message.get("servers", []))
    if kind == "subscribed":
        return None
    if kind == "bulk_done":
        return render_bulk(message.get("results", {}))
    if kind == "container_response":
        return f"[{server}] container {message.get('action')}: {message.get('status')}"
    return str(message)


def render_worlds(worlds: list[dict[str, Any]], server: str) -> str:
    if not worlds:
        return f"[{server}] no worlds running"
    out = []
    for w in worlds:
        out.append(
            f"[{w.get('index', '?')}] {w.get('name')}  users {w.get('users')}/{w.get('maxUsers')} "
            f"(present {w.get('present')})  {w.get('accessLevel')}  up {w.get('uptime')}"
        )
        for u in w.get("users_list", []):
            flags = [] if u.get("present") else ["away"]
            if u.get("silenced"):
                flags.append("silenced")
            role = f" {u['role']}" if u.get("role") else ""
            tail = f"  ({', '.join(flags)})" if flags else ""
            out.append(f"      {u.get('username')}{role}  ping {u.get('ping')} ms{tail}")
    return "\n".join(out)


def render_status(status: dict[str, Any], server: str) -> str:
    return (
        f"[{server}] {status.get('status')}  cpu {status.get('cpu_usage')}%  "
        f"memory {status.get('memory_used')}/{status.get('memory_total')} "
        f"({status.get('memory_percent')}%)  up {status.get('uptime') or '?'}  "
        f"restarts {status.get('restarts', 0)}"
    )


def render_servers(servers: list[dict[str, Any]]) -> str:
    if not servers:
        return "no servers"
    return "\n".join(
        f"{s.get('server')}  {s.get('status')}  on {s.get('host')}  worlds {s.get('worlds')}  "
        f"users {s.get('users')}" + ("" if s.get("online", True) else "  (offline)")
        for s in servers
    )
