"""Engine log text: startup banner, stack traces, noise blocks and chatter.

The real headless prints its engine log on the same stdout as the console,
so these lines land inside command output (noise) or on their own, glued after
the prompt when idle (chatter). Every generator takes the random stream it
draws from, so a seed reproduces them byte for byte. The kinds are the ones
seen in real console captures; their wording is plausible, not
captured.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from .state import Server, World

STACK_TRACE_FRAMES: tuple[str, ...] = (
    "FrooxEngine.World.RunSynchronously(Action action, Boolean immediatellyIfPossible)",
    "FrooxEngine.Session.SendControlMessage(ControlMessage message)",
    "FrooxEngine.SessionConnectionManager.ProcessControlMessage(ControlMessage message)",
    "FrooxEngine.World.Update()",
    "FrooxEngine.WorldManager.RunUpdates()",
    "FrooxEngine.Engine.UpdateStep()",
    "FrooxEngine.Engine.RunUpdateLoop(Double maxMilliseconds)",
    "FrooxEngine.Headless.HeadlessRunner.Loop()",
    "System.Threading.Tasks.Task.InnerInvoke()",
    "System.Threading.ExecutionContext.RunFromThreadPoolDispatchLoop(Thread threadPoolThread, "
    "ExecutionContext executionContext, ContextCallback callback, Object state)",
    "System.Threading.Tasks.Task.ExecuteWithThreadLocal(Task& currentTaskSlot, Thread threadPoolThread)",
    "System.Threading.ThreadPoolWorkQueue.Dispatch()",
    "System.Threading.PortableThreadPool.WorkerThread.WorkerThreadStart()",
    "System.Runtime.CompilerServices.AsyncMethodBuilderCore.Start[TStateMachine](TStateMachine& stateMachine)",
    "FrooxEngine.CoroutineManager.ExecuteWorldQueue(Double maxMilliseconds)",
    "FrooxEngine.UpdateManager.RunUpdates(Double maxMilliseconds)",
    "FrooxEngine.World.RefreshStep()",
    "FrooxEngine.World.ProcessCommands()",
    "Elements.Core.SpinQueue`1.TryDequeue(T& item)",
    "FrooxEngine.SyncElement.EndModification()",
    "FrooxEngine.Headless.CommandHandler.ProcessCommand(String line)",
    "FrooxEngine.Headless.CommandHandler.RunInteractive()",
)
"""Frames a trace is built from; each trace opens with its own command's frames."""

TRACE_HEADS: dict[str, tuple[str, ...]] = {
    "kick": ("FrooxEngine.User.Kick()", "FrooxEngine.Headless.Commands.KickCommand.Run(World world, String[] args)"),
    "ban": ("FrooxEngine.User.Ban()", "FrooxEngine.Headless.Commands.BanCommand.Run(World world, String[] args)"),
    "silence": ("FrooxEngine.User.set_IsSilenced(Boolean value)",
                "FrooxEngine.Headless.Commands.SilenceCommand.Run(World world, String[] args)"),
    "respawn": ("FrooxEngine.User.Respawn()",
                "FrooxEngine.Headless.Commands.RespawnCommand.Run(World world, String[] args)"),
    "shutdown": ("FrooxEngine.Engine.RequestShutdown()",
                 "FrooxEngine.Headless.Commands.ShutdownCommand.Run(World world, String[] args)"),
    "noise": ("FrooxEngine.AssetManager.GatherAsset(Uri url)",
              "FrooxEngine.Store.LocalDB.TryFetchRecordAsync(Uri url)"),
}
TRACE_LENGTHS: dict[str, int] = {"kick": 22, "ban": 24, "silence": 21, "respawn": 20,
                                 "shutdown": 23, "noise": 20}


def stack_trace(kind: str) -> list[str]:
    """A blank line, then ~20-25 lines of ``   at ...`` (fixed per kind, no randomness)."""
    frames = list(TRACE_HEADS[kind]) + list(STACK_TRACE_FRAMES)
    count = TRACE_LENGTHS[kind]
    return [""] + [f"   at {frame}" for frame in frames[:count]]


def _user_id(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "U-" + "".join(rng.choice(alphabet) for _ in range(10))


def _stamp(rng: random.Random) -> str:
    return (f"2026-06-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
            f":{rng.randint(0, 59):02d}.{rng.randint(0, 9999999):07d}Z")


def signalr_status(rng: random.Random) -> list[str]:
    """``SIGNALR: BroadcastStatus`` with its TAB-indented children."""
    return [
        f"SIGNALR: BroadcastStatus - Contact status for {_user_id(rng)}.",
        f"\tOnlineStatus: {rng.choice(('Online', 'Away', 'Busy', 'Invisible'))}",
        "\tSessionType: Headless",
        f"\tLastStatusChange: {_stamp(rng)}",
        f"\tSessions: {rng.randint(1, 4)}",
    ]


def signalr_session(rng: random.Random, world: World | None, host_id: str) -> list[str]:
    """``SIGNALR: BroadcastSession SessionInfo...`` for one of the running worlds."""
    name = world.name if world else "Userspace"
    session = world.session_id if world else "S-00000000-0000-4000-8000-000000000000"
    port = rng.randint(20000, 65000)
    return [
        f"SIGNALR: BroadcastSession SessionInfo. Id: {session}, Name: {name}, Host: {host_id}, "
        f"URLs: lnl-nat://{session.lower()}/, res-steam://{rng.randint(10**16, 10**17 - 1)}/{port}/"
    ]


def running_refresh(rng: random.Random, host_id: str) -> list[str]:
    path = rng.choice(("Inventory", "Inventory\\Worlds", "Inventory\\Avatars", "Inventory\\Tools"))
    return [f"Running refresh on: OwnerId: {host_id}, Path: {path}"]


def updated(rng: random.Random) -> list[str]:
    kind = rng.randrange(3)
    if kind == 0:
        old = rng.randint(1, 5000)
        return [f"Updated: {old} -> {old + rng.randint(1, 9)}"]
    if kind == 1:
        return [f"Updated: {_stamp(rng)} -> {_stamp(rng)}"]
    return [f"Updated: {rng.choice(('Online', 'Away'))} -> {rng.choice(('Busy', 'Online'))}"]


def log_block(rng: random.Random, server: Server) -> list[str]:
    """One engine log block of a random kind (noise or chatter)."""
    worlds = server.worlds
    world = rng.choice(worlds) if worlds else None
    kind = rng.randrange(10)
    if kind < 3:
        return signalr_status(rng)
    if kind < 5:
        return signalr_session(rng, world, server.account_id)
    if kind < 7:
        return running_refresh(rng, server.account_id)
    if kind < 9:
        return updated(rng)
    return stack_trace("noise")


def inject_noise(rng: random.Random, server: Server, lines: Sequence[str],
                 paint: Callable[[str], str] | None = None) -> list[str]:
    """With probability ``noise_rate``, put one log block at a random line boundary.

    The block may land before, between or after the answer's lines, as the
    engine's log thread does on the real console.
    """
    rate = server.options.noise_rate
    if rate <= 0 or rng.random() >= rate:
        return list(lines)
    at = rng.randint(0, len(lines))
    block = log_block(rng, server)
    if paint is not None:
        block = [paint(line) for line in block]
    return [*lines[:at], *block, *lines[at:]]


def startup_lines(server: Server) -> list[str]:
    """The banner up to (not including) the per-world lines."""
    lines = [
        f"Initializing App: Beta {server.version}",
        "Compatibility Hash: 4qMr+Qx8Yv7nX0e2kWb5Jg==",
        "Processor count: 8, Available memory: 16384 MB",
        "BOOTSTRAP: Initializing Resonite headless",
        "BOOTSTRAP: Loading config from Config/Config.json",
        "Supported texture formats: RGBA32, BC1, BC3, BC4, BC5, BC6H, BC7",
        "Engine Ready!",
    ]
    if server.logged_in:
        lines += [f"Logging in as {server.account_name}",
                  "Updated: Offline -> Online", f"Logged in as {server.account_name}"]
    return lines


def world_start_lines(server: Server, world: World) -> list[str]:
    """Lines printed while one world starts, ending in ``World running...``."""
    return [
        f"Starting world: {world.name}",
        f"Updated: {world.session_id} -> {world.session_id}",
        f"User Joined {server.account_name}",
        "World running...",
    ]


def shutdown_lines(server: Server) -> list[str]:
    """``shutdown``: saving, the request, its trace, and the engine going down."""
    lines = ["Exiting. Save Homes: False"]
    for world in server.worlds:
        lines.append(f"Saving world: {world.name}")
    lines += ["Shutdown requested", *stack_trace("shutdown"), "Shutting down",
              "Disposing worlds", "Engine shut down"]
    return lines
