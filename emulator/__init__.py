"""An emulated Resonite headless console: the real one's commands, formats and quirks.

The real headless cannot run here, so everything that drives a console (the
agent, its parsers, benchmarks, demos) is tested against this. It uses only the
Python standard library (3.11+) and imports itself relatively, so a Docker image needs
nothing but a Python and ``COPY emulator/``, and runs it as ``python3 -m emulator``;
installed, it is ``resofleet.emulator``.

Running it
==========
``resofleet emulator``, ``python3 -m resofleet.emulator``, or ``python3 -m emulator`` from a
bare copy of the folder, with:

--scenario FILE       a TOML file, or a built-in name: ``default``, ``busy``, ``demo``
--tty                 behave as under ``docker run -t`` (echo, CRLF; see TTY below)
--seed N              seed every random choice (overrides the file's ``seed``)
--frozen-clock        stop the clock: uptimes are exactly the scenario's, new worlds 00:00:00
--first-command-quirk answer the first command after startup ``Unknown command``
--noise-rate R        probability 0..1 that a command's output gets a log block inside
--chatter-rate N      engine log lines per second, also while idle at the prompt
--activity-interval S mean seconds between a user joining or leaving (0: off)
--latency CMD=S       seconds a command takes (repeatable), ``--no-latency`` drops them
--startup-delay S     seconds the startup log takes before the first prompt

Exit codes: 0 on stdin EOF and after ``shutdown``; ``crash`` exits at once with
134 (SIGABRT, as an unhandled .NET exception does; ``crash_exit_code``);
2 for a bad scenario (one line on stderr naming the file and key); 130 on Ctrl-C;
143 on SIGTERM (handled, so `docker stop` is quick even with the emulator as PID 1).
Nothing else ever goes to stderr.

Modules
=======
``state`` (worlds, users, bans, options, clock, random streams), ``formats``
(exact output formats, pure), ``syntax`` (what a command and a reply are),
``commands`` (the 55 commands), ``interpreter`` (a line in, a reply out, Sans-I/O),
``noise`` (engine log text: startup, traces, noise, chatter), ``activity``
(joins and leaves), ``scenario`` (TOML loading), ``console`` (the I/O loop),
``cli`` (options shared with ``resofleet emulator``).

Scenario schema (TOML; unknown keys are errors)
===============================================
Top level::

    seed = 1                      # optional; --seed wins
    version = "2026.5.27.1300"    # `version` and the startup banner
    frozen_clock = false
    tick_rate = 60.0
    friends = ["Mira"]            # who message/invite/removeFriend accept
    friend_requests = ["Nadia"]   # friendRequests, acceptFriendRequest

    [account]        username, user_id, logged_in (true)
    [quirks]         first_command_unknown  bool or probability (false)
                     resonite_link_line     status ends with ResoniteLink: (true; 2026+ builds)
                     empty_value_space      "Tags: " (true) or "Tags:" (false)
                     machine_id_separator   between machine ids in listbans (", ")
                     session_url            sessionUrl template ("ressession:///{session_id}")
                     logged_out_ids         "all" or "host": whose ID: is empty when logged out
                     close_destroyed        bool/probability of a late "The world has been
                                            destroyed in the meanwhile" after close (false)
                     restart_destroyed      bool/probability that the first command after a
                                            restart fails that way; `focus` clears it (false)
                     wedge_on_bad_url       startWorldURL with a malformed URL never returns (false)
                     ansi_colors            colour engine log lines in TTY mode (false)
                     crash_exit_code        (134)
    [noise]          rate       probability per command of one log block inside its output
    [chatter]        rate       log lines per second, printed whenever they happen
    [activity]       interval   mean seconds between a join or leave (0 = off)
                     names      who joins (a built-in list when empty)
    [latency]        <command> = seconds, e.g. save = 0.2, restart = 1.0
    [startup]        delay (seconds, 0), log (true: print the engine banner)

    [[worlds]]       name, session_id (generated when absent), access_level, max_users,
                     hidden, mobile_friendly, description, tags, uptime ("[d.]hh:mm:ss[.f]",
                     the world started that long ago), away_kick_minutes,
                     resonite_link_port, host_role ("Admin"), host_fps
    [[worlds.users]] username (required), user_id, role, present, ping (ms), fps, silenced,
                     machine_ids
    [[bans]]         username, user_id, machine_ids

The headless's own account (``[account]``) is implicitly the first user of
every world, never present. Worlds start in file order and the last one has
focus, as on the real console. Built-ins: ``default`` (two worlds, a few users,
one ban, every quirk off; save 0.2 s, restart 1 s), ``demo`` (slow activity,
no noise, no chatter), ``busy`` (six worlds, ~40 users, five bans, hard names,
activity every ~4 s, noise on 5% of commands).

Behaviour and decisions
=======================
Faithful to the real console: prompt ``<focused world>>`` with no newline (``>`` alone
when no world is focused, a case never observed on the real one); silent commands
stack prompts; startup ends with one ``World running...`` per world; ``help``
prints three lines per command; names, padding, TABs and error texts as
documented; kick/ban/silence/unsilence/respawn print a diagnostic line, a blank
line, a 20-24 line stack trace and the result; ``shutdown`` prints its sequence
without a prompt and exits 0; joins and leaves print nothing at the prompt.

Replies chosen where the real console's answer was never observed (plausible,
documented here):

- An empty input line prints nothing: the prompt comes again.
- Too few arguments: the command's usage line (``Usage: kick <username>``).
  Extra unquoted words are ignored (``name Foo Bar`` names the world ``Foo``).
- A world command with no focused world: ``No world is currently focused``.
- Users are matched by exact name, then case-insensitively, then by user id.
  kick/ban of the headless's own account print the usual sequence but it stays.
- ``saveConfig [f]`` -> ``Config saved to <f or Config/Config.json>``.
- ``login u p`` -> ``Logging in as u``, ``Logged in as u`` (or ``Already logged in as
  X``; an empty password -> ``Login failed: invalid credentials``); ``logout`` ->
  ``Logged out`` / ``Not logged in``. Logged out, ``users`` prints ``ID: `` empty.
- ``message``/``invite`` need login and a friend (``Not logged in`` /
  ``User not found``). ``sendFriendRequest`` -> ``Friend request sent!`` (``Already
  friends``); ``removeFriend`` -> ``Friend removed!``.
- ``startWorldURL`` accepts ``resrec:///owner/record`` and http(s) URLs, names the
  world ``World <record>``; ``startWorldTemplate`` knows Grid, Platform, Blank,
  SpaceWorld and names the world after it. Both print ``Starting world: ...``,
  an ``Updated:`` line, ``User Joined <host>``, ``World running...`` and focus it.
  Bad input: ``Invalid record URL: <url>`` / ``Invalid template. Available: ...``.
- ``enableResoniteLink p`` -> ``ResoniteLink enabled on port <p>`` (0 picks one);
  ``status`` then says ``ResoniteLink: on, port <p>``.
- ``copySessionURL``/``copySessionID``, ``save``, ``import``, ``importMinecraft``,
  ``dynamicImpulse*``, ``spawn``: silent (a headless has no clipboard; the others
  are fire-and-forget). dynamicImpulseInt/Float with a bad value -> ``Invalid value``.
- ``close`` focuses the last remaining world (none: prompt ``>``); ``restart``
  keeps only the host, resets uptime, and draws a new session id unless the id
  is a custom ``S-U-...`` one.
- ``unban U`` -> ``Removed <n> matching bans``; ``banByName``/``banByID`` ->
  ``User banned`` / ``Already banned``; ``unbanByName``/``unbanByID`` ->
  ``Ban removed`` / ``Ban not found``. Banning removes the user from every world.
- ``awayKickInterval``/``tickRate`` with a bad number -> ``Invalid number``;
  ``hideFromListing``/``spawn`` with a bad bool -> ``Invalid value. Must be true or false``;
  invalid access level -> ``Invalid access level. Valid levels are: ...``.
- ``debugWorldState`` prints four summary lines; ``version`` prints the bare build.
- ``log`` switches to log mode: no prompt, joins/leaves print ``User Joined X`` /
  ``User Left X``; the next input line (any text, not run) returns to the prompt.

Randomness and time
===================
One ``random.Random(seed)`` seeds independent streams (ids, noise, chatter,
activity, quirks), so turning activity on never shifts the noise: with the same
seed and input, output bytes repeat, except uptimes, which follow the clock
unless ``--frozen-clock``. Uptime is .NET's TimeSpan "c" format, fraction
omitted when zero exactly as .NET does (``00:00:00``).

TTY
===
``--tty`` emulates the line discipline of ``docker run -t`` over plain pipes:
every input line is echoed (before its output, glued after the prompt) and
every ``\\n`` written becomes ``\\r\\n``. When stdin (or stdout) really is a TTY,
as inside a container with ``tty: true``, the kernel already echoes (and maps
newlines), so the emulator does not add a second echo (or a second CR). Input
lines may end in ``\\n`` or ``\\r\\n``.

Docker image
============
``deploy/emulator.Dockerfile``: ``ARG BASE_IMAGE`` (``python:3.12-slim`` by
default; offline, ``--build-arg BASE_IMAGE=$RESOFLEET_DOCKER_BASE_IMAGE``), any
python3 >= 3.11 with its full stdlib (``tomllib``: Debian's python3-minimal alone
lacks it). ``COPY emulator/``, runs as uid 65534, entrypoint ``python3 -m
emulator``, default ``--scenario default``. Run it like the community headless
images (``tty: true``, ``stdin_open: true``); the kernel's TTY then echoes and
maps CRLF. Build from a context without ``.venv`` (the tests copy ``emulator/``
into a temporary context).

Output is written straight to fd 1 by one writer whose lock makes a command's
answer plus the next prompt, or one batch of chatter, a single write burst:
chatter lands between bursts (glued after the prompt when idle), never inside
a line. Timers run on one background thread sleeping on an Event.
"""

from __future__ import annotations

__all__: list[str] = []
