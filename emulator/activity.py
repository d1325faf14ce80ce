"""Users joining and leaving over time, for demos and load.

As on the real server, joins and leaves change what ``worlds`` and ``users``
report but print nothing at the prompt; only in ``log`` mode does the console
show them (the console loop decides). Pure functions of the state and the
activity random stream; the caller holds the state lock.
"""

from __future__ import annotations

import random
import re

from .state import Server, User, World

DEFAULT_NAMES: tuple[str, ...] = (
    "Mira", "Tobias", "Nadia", "Kenji", "Lucía", "Ravi", "Oksana", "Théo", "Amara", "Finn",
    "Yuki", "Sven", "Priya", "Mateo", "Ilse", "Chen Wei", "Aroha", "Dmitri", "Zoë", "Kwame",
)
"""Who joins when a scenario's ``[activity] names`` is empty."""
PRESENT_PROBABILITY = 0.8
"""Share of joining users who are present (the rest are away or in another world)."""
PING_MS = (15, 180)
FPS_RANGE = (30.0, 90.0)


def next_delay(rng: random.Random, mean_interval: float) -> float:
    """Seconds to the next join or leave: exponential, so events arrive as a Poisson stream."""
    return rng.expovariate(1.0 / mean_interval)


def _joinable(server: Server) -> list[World]:
    return [w for w in server.worlds if w.user_count < w.max_users]


def _guests(server: Server) -> list[tuple[World, User]]:
    return [(w, u) for w in server.worlds for u in w.users[1:]]


def join(server: Server, rng: random.Random) -> str | None:
    """Someone not banned and not already there joins a world with room; returns a log line."""
    worlds = _joinable(server)
    if not worlds:
        return None
    world = rng.choice(worlds)
    pool = server.options.activity_names or list(DEFAULT_NAMES)
    here = {u.username for u in world.users}
    candidates = [n for n in pool if n not in here and server.find_ban(username=n) is None]
    if not candidates:
        return None
    name = rng.choice(candidates)
    user = User(
        username=name,
        user_id="U-" + (re.sub(r"[^A-Za-z0-9-]", "", name) or f"{rng.getrandbits(40):010x}"),
        role=rng.choice(("Builder", "Guest", "Guest")),
        present=rng.random() < PRESENT_PROBABILITY,
        ping=rng.randint(*PING_MS),
        fps=round(rng.uniform(*FPS_RANGE), 5),
    )
    world.users.append(user)
    return f"User Joined {name}"


def leave(server: Server, rng: random.Random) -> str | None:
    """A random user (never the headless's own account) leaves; returns a log line."""
    guests = _guests(server)
    if not guests:
        return None
    world, user = rng.choice(guests)
    world.users.remove(user)
    return f"User Left {user.username}"


def step(server: Server, rng: random.Random) -> str | None:
    """One join or leave, whichever is possible, else a coin toss."""
    can_join = bool(_joinable(server))
    can_leave = bool(_guests(server))
    if can_join and (not can_leave or rng.random() < 0.5):
        return join(server, rng)
    if can_leave:
        return leave(server, rng)
    return None
