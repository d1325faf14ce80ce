"""The console reader, driven with byte strings and times only (no I/O, no event loop)."""

from __future__ import annotations

import pytest

from resofleet.agent.reader import (
    MAX_REPLY_CHARS,
    STALE_PROMPT_QUIET,
    SYNC_FLOWING,
    SYNC_QUIET,
    UNKNOWN_PROMPT_QUIET,
    Answer,
    CallAt,
    Closed,
    ConsoleReader,
    Event,
    Line,
    StartupEnded,
)

T = 100.0  # any clock will do; the reader only compares times
STARTUP = (
    b"Engine Ready!\n"
    b"Starting world: Harbor Lounge\n"
    b"World running...\n"
    b"Starting world: Night Market\n"
    b"Updated: S-1 -> S-1\n"
    b"World running...\n"
)
WORLDS = (
    "[0] Harbor Lounge                   Users: 3\tPresent: 2\tAccessLevel: Anyone\tMaxUsers: 16\n"
    "[1] Night Market                    Users: 1\tPresent: 0\tAccessLevel: Private\tMaxUsers: 4\n"
)
NIGHT = b"Night Market>"
CHATTER = "SIGNALR: BroadcastStatus - Contact status for U-x."


def status(name: str) -> str:
    return (
        f"Name: {name}\nSessionID: S-1\nCurrent Users: 1\nPresent Users: 0\nMax Users: 4\n"
        "Uptime: 00:01:00\nAccess Level: Private\nHidden from listing: False\n"
        "Mobile Friendly: False\nDescription: \nTags: \nUsers: Host\n"
    )


def answers(events: list[Event]) -> list[Answer]:
    return [e for e in events if isinstance(e, Answer)]


def streamed(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, Line) and e.streamed]


def calls(events: list[Event]) -> list[float]:
    return [e.when for e in events if isinstance(e, CallAt)]


def exchange(reader: ConsoleReader, command: str, output: str | bytes, now: float = T, *,
             stream: bool = True) -> list[Event]:
    """Send ``command``, receive ``output``: every event of both steps."""
    reader.send_command(command, stream=stream)
    reader.receive_data(output.encode() if isinstance(output, str) else output, now)
    return reader.events_received()


def synced() -> ConsoleReader:
    """A reader that has watched the console start, learned its focus and its worlds."""
    reader = ConsoleReader()
    reader.expect_startup(T - 3)
    reader.receive_data(STARTUP + NIGHT, T - 3)
    reader.send_status()
    reader.receive_data(status("Night Market").encode() + NIGHT, T - 2)
    assert answers(reader.events_received())[0].settled
    [answer] = answers(exchange(reader, "worlds", WORLDS + "Night Market>", T - 1, stream=False))
    reader.remember_worlds(answer.lines)
    reader.data_to_send()
    return reader


# -- replies end at the prompt -------------------------------------------------------------


def test_reply_ends_at_the_expected_prompt():
    """The reply is the lines before the prompt, complete the moment the prompt arrives."""
    reader = synced()
    events = exchange(reader, "worlds", WORLDS + "Night Market>")
    [answer] = answers(events)
    assert answer.lines == tuple(WORLDS.splitlines())
    assert (answer.prompt, answer.settled) == ("Night Market>", True)
    assert calls(events) == []
    assert reader.data_to_send() == [b"worlds\n"]


def test_reply_in_any_chunking():
    """Bytes split anywhere (the prompt too) give the same one answer."""
    data = (WORLDS + "Night Market>").encode()
    for cut in range(1, len(data)):
        reader = synced()
        first = exchange(reader, "worlds", data[:cut])
        reader.receive_data(data[cut:], T)
        assert answers(first) == []
        [answer] = answers(reader.events_received())
        assert answer.lines == tuple(WORLDS.splitlines())


def test_silence_alone_never_ends_a_reply():
    """A slow command without its prompt is waited for: no quiet period applies."""
    reader = synced()
    events = exchange(reader, "save", "Saving world...\n")
    reader.tick(T + 1000)
    assert answers(events + reader.events_received()) == [] and calls(events) == []


def test_stacked_prompts_end_the_reply():
    """Prompts stacked before the expected one (silent commands, an empty line) are fine."""
    [answer] = answers(exchange(synced(), "maxUsers 8", "Night Market>Night Market>"))
    assert answer.lines == () and answer.settled


def test_prompt_glued_to_a_log_line_ends_the_reply():
    """The prompt with an engine log line after it ends the reply; the log line is idle output."""
    reader = synced()
    events = exchange(reader, "users", f"HarborHost\tID: U-1\nNight Market>{CHATTER}\nmore")
    [answer] = answers(events)
    assert answer.lines == ("HarborHost\tID: U-1",)
    assert events.index(answer) < events.index(Line(CHATTER, True))
    reader.receive_data(b" chatter\n", T)
    assert streamed(reader.events_received()) == ["more chatter"]


def test_stale_prompt_is_accepted_after_a_longer_quiet():
    """A prompt that is not the expected one ends the reply after STALE_PROMPT_QUIET."""
    reader = synced()
    events = exchange(reader, "maxUsers 8", "Renamed Elsewhere>")
    assert answers(events) == [] and calls(events) == [T + STALE_PROMPT_QUIET]
    reader.tick(T + STALE_PROMPT_QUIET)
    [answer] = answers(reader.events_received())
    assert (answer.prompt, answer.expected, answer.settled) == (
        "Renamed Elsewhere>", "Night Market>", False)
    assert reader.prompt == "Renamed Elsewhere>"


@pytest.mark.parametrize("command", ["startWorldURL resrec:///x", "startWorldTemplate Grid",
                                     "close", "restart", 'focus "Nowhere"'])
def test_unknown_prompt_ends_after_a_short_quiet(command):
    """After a command that moves the focus unpredictably, a trailing '...>' and
    UNKNOWN_PROMPT_QUIET of silence end the reply, unsettled (ask status)."""
    reader = synced()
    events = exchange(reader, command, "Grid>")
    assert answers(events) == [] and calls(events) == [T + UNKNOWN_PROMPT_QUIET]
    reader.tick(T + UNKNOWN_PROMPT_QUIET / 2)  # too early: asks again for the same time
    assert reader.events_received() == [CallAt(T + UNKNOWN_PROMPT_QUIET)]
    reader.tick(T + UNKNOWN_PROMPT_QUIET)
    [answer] = answers(reader.events_received())
    assert (answer.prompt, answer.settled) == ("Grid>", False)


def test_output_during_the_quiet_period_restarts_it():
    """The quiet period counts from the last output."""
    reader = synced()
    exchange(reader, "close", "Grid>")
    reader.receive_data(b"\nA>", T + 0.1)
    assert calls(reader.events_received()) == [T + 0.1 + UNKNOWN_PROMPT_QUIET]
    reader.tick(T + UNKNOWN_PROMPT_QUIET)
    assert answers(reader.events_received()) == []


GLUED = [
    (f"Night Market>{CHATTER}", "Night Market>"),
    ("Harbor Lounge>Updated: 1 -> 2", "Harbor Lounge>"),
    ("Harbor Lounge>Running refresh on: OwnerId: U-x, Path: Inventory", "Harbor Lounge>"),
    ("Harbor Lounge>   at FrooxEngine.World.Update()", "Harbor Lounge>"),
    ("Club > Midnight: Vol. 2>SIGNALR: x", "Club > Midnight: Vol. 2>"),
    ("The <color=#ff0000>Red</color> Room>SIGNALR: x", "The <color=#ff0000>Red</color> Room>"),
    ("東京ナイトクラブ 🌃>Updated: a -> b", "東京ナイトクラブ 🌃>"),
    (">SIGNALR: x", ">"),  # no focused world
    ("A>SIGNALR: x", "A>"),
]
NOT_GLUED = [
    "Updated: Offline -> Online",  # a log line with '>' in it is no prompt
    "Updated: 1 -> 2",
    "World running...",
    "Night Market>",  # a bare prompt has nothing glued to it
    "Night Market>worlds",  # a command echo, not chatter
    "Harbor Lounge>Name: Harbor Lounge",
    "Starting world: A > B",
    "",
]


@pytest.mark.parametrize(("line", "prompt"), GLUED)
def test_unknown_prompt_glued_to_chatter_ends_the_reply(line, prompt):
    """Chatter never lets the console fall quiet: a prompt-shaped start followed by a
    recognised log line ends a reply whose prompt is unknown, at once."""
    reader = synced()
    events = exchange(reader, "close", f"{line}\n")
    [answer] = answers(events)
    assert answer.prompt == prompt and reader.prompt == prompt
    assert streamed(events)[-1] == line[len(prompt):]


# -- startup -------------------------------------------------------------------------------


def test_startup_ends_at_the_first_prompt():
    """The first prompt ends the startup wait and is dropped: the next answer starts clean."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    reader.receive_data(STARTUP, T)
    assert not any(isinstance(e, StartupEnded) for e in reader.events_received())
    reader.receive_data(NIGHT, T)
    assert StartupEnded("prompt") in reader.events_received()
    reader.send_status()
    reader.receive_data(status("Night Market").encode() + NIGHT, T)
    [answer] = answers(reader.events_received())
    assert answer.lines[0] == "Name: Night Market" and answer.settled


@pytest.mark.parametrize(("line", "prompt"), GLUED)
def test_startup_ends_at_a_prompt_glued_to_chatter(line, prompt):
    """A first prompt that chatter was glued onto ends the wait; the chatter is streamed."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    reader.receive_data(STARTUP + f"{line}\n".encode(), T)
    events = reader.events_received()
    assert StartupEnded("glued prompt") in events
    assert streamed(events)[-1] == line[len(prompt):]


@pytest.mark.parametrize("line", NOT_GLUED)
def test_lines_without_a_glued_prompt_do_not_end_startup(line):
    """Log lines (even with '>' in them), echoes and bare prompts on their own line are
    not a first prompt with chatter glued onto it."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    reader.receive_data(f"{line}\n".encode(), T)
    events = reader.events_received()
    assert not any(isinstance(e, StartupEnded) for e in events)
    assert streamed(events) == [line]


def test_startup_ends_after_a_quiet_moment():
    """No prompt-shaped tail: SYNC_QUIET of silence after output ends the wait."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    reader.receive_data(b"Engine Ready!\n", T + 1)
    assert calls(reader.events_received()) == [T + 1 + SYNC_QUIET]
    reader.tick(T + 1 + SYNC_QUIET)
    assert reader.events_received() == [StartupEnded("quiet")]


def _chatter(reader: ConsoleReader, start: float, stop: float) -> float | None:
    """Feed a log line every 0.1 s from ``start``; when the startup wait ended, if it did."""
    steps = round((stop - start) / 0.1)
    for step in range(steps + 1):
        now = start + step * 0.1
        reader.tick(now)
        reader.receive_data(f"{CHATTER}\n".encode(), now)
        if any(isinstance(e, StartupEnded) for e in reader.events_received()):
            return now
    return None


def test_startup_ends_after_output_flowing_for_a_while():
    """A console that never falls quiet and shows no recognisable prompt: the wait ends
    SYNC_FLOWING after it began."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    ended = _chatter(reader, T, T + 5)
    assert ended == pytest.approx(T + SYNC_FLOWING)


def test_world_running_restarts_the_flowing_clock():
    """Each ``World running...`` (another world started) counts SYNC_FLOWING afresh."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    assert _chatter(reader, T, T + 1) is None
    reader.receive_data(b"World running...\n", T + 1.05)
    ended = _chatter(reader, T + 1.1, T + 5)
    assert ended == pytest.approx(T + 1.05 + SYNC_FLOWING, abs=0.1)


def test_startup_without_any_output_waits():
    """Before the console printed anything, nothing ends the wait (the caller's deadline does)."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    reader.tick(T + 1000)
    assert reader.events_received() == []


def test_resynchronising_a_quiet_console_ends_the_wait_at_once():
    """A console silent for a while (after a timed-out command) is past startup already."""
    reader = synced()
    reader.expect_startup(T + 10)
    assert reader.events_received() == [StartupEnded("quiet")]
    assert reader.prompt is None  # to be learned again


# -- learning the focus --------------------------------------------------------------------


def test_status_teaches_the_focused_world():
    """``status`` asked for the focus: its Name line gives the prompt; not streamed."""
    reader = synced()
    reader.send_status()
    reader.receive_data(status("Harbor Lounge").encode() + b"Harbor Lounge>", T)
    events = reader.events_received()
    [answer] = answers(events)
    assert answer.settled and reader.prompt == "Harbor Lounge>" and reader.focused_index == 0
    assert streamed(events) == []
    assert reader.data_to_send() == [b"status\n"]


@pytest.mark.parametrize(("first", "name"), [
    ("Harbor Lounge>Name: Harbor Lounge", "Harbor Lounge"),
    ("X>Name: X", "X"),
    ("Club > Name: Club >Name: Club > Name: Club ", "Club > Name: Club "),
])
def test_status_answered_on_the_first_prompts_line(first, name):
    """A status sent before the first prompt showed is answered on that prompt's line:
    ``X>Name: X`` still names the focused world."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    reader.receive_data(b"Engine Ready!\n", T)
    reader.tick(T + SYNC_QUIET)
    reader.send_status()
    rest = status(name).split("\n", 1)[1]
    reader.receive_data(f"{first}\n{rest}{name}>".encode(), T + 1)
    [answer] = answers(reader.events_received())
    assert answer.lines[0] == f"Name: {name}"
    assert reader.prompt == f"{name}>" and answer.settled


def test_status_line_after_another_prompt_is_not_its_answer():
    """``Other>Name: X`` is not a status glued to its own prompt: kept as printed."""
    reader = synced()
    reader.expect_startup(T)
    reader.send_status()
    rest = status("Harbor Lounge").split("\n", 1)[1]
    reader.receive_data(f"Other>Name: Harbor Lounge\n{rest}Harbor Lounge>".encode(), T + 1)
    reader.tick(T + 1 + UNKNOWN_PROMPT_QUIET)
    [answer] = answers(reader.events_received())
    assert answer.lines[0] == "Other>Name: Harbor Lounge"


def test_chatter_on_a_prompt_before_the_status_answer_does_not_end_it():
    """A prompt printed before ``status`` was read, chatter glued to it: the question
    waits for its own answer."""
    reader = synced()
    reader.expect_startup(T + 10)
    reader.send_status()
    reader.receive_data(f"Night Market>{CHATTER}\n".encode(), T + 10)
    assert answers(reader.events_received()) == []
    reader.receive_data(status("Night Market").encode() + NIGHT, T + 10)
    [answer] = answers(reader.events_received())
    assert answer.settled and reader.prompt == "Night Market>"


def test_first_command_quirk_leaves_the_focus_unsettled():
    """``Unknown command`` to the first status: answered (its prompt ends it, even glued
    to chatter) but unsettled, so the caller asks again, which settles."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    reader.receive_data(STARTUP + NIGHT, T)
    reader.send_status()
    reader.receive_data(f"Unknown command\nNight Market>{CHATTER}\n".encode(), T)
    [answer] = answers(reader.events_received())
    assert answer.lines == ("Unknown command",) and not answer.settled
    reader.send_status()
    reader.receive_data(status("Night Market").encode() + NIGHT, T)
    assert answers(reader.events_received())[0].settled


def test_first_command_quirk_after_a_stacked_prompt():
    """``Night Market>Unknown command`` (a prompt printed before ``status`` was read, then
    the quirk) is the question's answer: the next prompt ends it, even glued to chatter."""
    reader = ConsoleReader()
    reader.expect_startup(T)
    reader.receive_data(STARTUP + b"Engine log\n", T)
    reader.tick(T + SYNC_QUIET)
    reader.send_status()
    reader.receive_data(f"Night Market>Unknown command\nNight Market>{CHATTER}\n".encode(), T + 1)
    [answer] = answers(reader.events_received())
    assert answer.prompt == "Night Market>" == reader.prompt


# -- predicting the prompt -----------------------------------------------------------------


@pytest.mark.parametrize(("command", "prompt"), [
    ("focus 0", "Harbor Lounge>"),
    ('focus "Harbor Lounge"', "Harbor Lounge>"),
    ("focus 7", "Night Market>"),  # out of range: an error line, the focus stays
    ('name "Harbor > Lounge: Two"', "Harbor > Lounge: Two>"),
    ("name Solo", "Solo>"),
    ("maxUsers 8", "Night Market>"),
    ("", "Night Market>"),  # an empty line: the console prints its prompt again
])
def test_the_next_prompt_is_predicted(command, prompt):
    """focus (by index or name) and name change the prompt: the reply ends at the new one."""
    reader = synced()
    [answer] = answers(exchange(reader, command, prompt))
    assert answer.settled and reader.prompt == prompt


def test_focused_index_follows_the_prompt():
    """The focused world's index among the remembered worlds follows focus changes."""
    reader = synced()
    assert reader.focused_index == 1 and reader.world_names == ["Harbor Lounge", "Night Market"]
    exchange(reader, "focus 0", "Harbor Lounge>")
    assert reader.focused_index == 0


# -- the live stream -----------------------------------------------------------------------


def test_user_command_is_streamed_as_a_terminal_shows_it():
    """``<prompt><command>``, then the command's output lines."""
    reader = synced()
    events = exchange(reader, "listbans", "[0]\tUsername: SpamBot\nNight Market>")
    assert streamed(events) == ["Night Market>listbans", "[0]\tUsername: SpamBot"]


def test_poll_answers_are_not_streamed_but_log_lines_inside_them_are():
    """The agent's own polls stay off the stream; engine log lines printed meanwhile do not."""
    reader = synced()
    events = exchange(reader, "users", f"Host\tID: U-1\n{CHATTER}\n\tchild\nMira\tID: U-2\n"
                      "Night Market>", stream=False)
    assert streamed(events) == [CHATTER, "\tchild"]
    assert answers(events)[0].lines == ("Host\tID: U-1", CHATTER, "\tchild", "Mira\tID: U-2")


def test_tty_echo_and_crlf_are_removed():
    """A TTY echoes the command and ends lines with CRLF: the answer is as over a pipe, and
    the console's own echo is the one line the stream shows for the command."""
    reader = synced()
    tty = "worlds\r\n" + WORLDS.replace("\n", "\r\n") + "Night Market>"
    events = exchange(reader, "worlds", tty)
    assert answers(events)[0].lines == tuple(WORLDS.splitlines())
    assert streamed(events) == ["Night Market>worlds", *WORLDS.splitlines()]
    assert not any("\r" in text for text in streamed(events))
    polled = exchange(reader, "worlds", tty, stream=False)
    assert Line("worlds", False) in polled and streamed(polled) == []  # a poll's echo: hidden


def test_the_echo_waits_for_the_console_to_show_it_read_the_command():
    """Over pipes nothing echoes: ``<prompt><command>`` is streamed when the console's
    answer starts, and not before (the command may never be read)."""
    reader = synced()
    reader.send_command("users")
    assert reader.events_received() == [] and reader.data_to_send() == [b"users\n"]
    reader.receive_data(b"Host\tID: U-1", T)  # an answer's first, unfinished line
    assert streamed(reader.events_received()) == []
    reader.receive_data(b"\nNight Market>", T)
    assert streamed(reader.events_received()) == ["Night Market>users", "Host\tID: U-1"]


def test_a_silent_command_is_echoed_at_its_prompt():
    """A command that prints nothing: its prompt is the console's sign it read it."""
    reader = synced()
    events = exchange(reader, "maxUsers 8", "Night Market>")
    assert streamed(events) == ["Night Market>maxUsers 8"]
    assert events.index(Line("Night Market>maxUsers 8", True)) < events.index(answers(events)[0])


def test_engine_log_lines_before_the_answer_come_before_the_echo():
    """Log lines are printed whenever the engine likes: they do not show the command was
    read, so they stream before the echo, which comes with the answer's first line."""
    reader = synced()
    events = exchange(reader, "users", f"{CHATTER}\nHost\tID: U-1\nNight Market>")
    assert streamed(events) == [CHATTER, "Night Market>users", "Host\tID: U-1"]


def test_a_command_the_console_never_answered_is_never_echoed():
    """Given up on (deadline) or cut off (the console closed) before a sign of it: no
    echo; late output is idle output."""
    reader = synced()
    reader.send_command("save")
    reader.abandon()
    reader.receive_data(b"Saved\nNight Market>", T)
    assert streamed(reader.events_received()) == ["Saved"]
    closed = synced()
    closed.send_command("save")
    closed.receive_eof()
    assert closed.events_received() == [Closed("save")]


def test_idle_chatter_loses_its_prompt():
    """Log lines printed at an idle prompt are streamed without the prompt(s) before them."""
    reader = synced()
    reader.receive_data(f"Night Market>Night Market>{CHATTER}\n".encode(), T)
    assert streamed(reader.events_received()) == [CHATTER]


@pytest.mark.parametrize(("data", "line"), [
    (b"\x1b[1;31mred\x1b[0m line\r\n", "red line"),
    (b"\x1b]0;title\x07red line\n", "red line"),
    ("r\u00e9d line \U0001f303\n".encode(), "r\u00e9d line \U0001f303"),
])
def test_escapes_and_characters_cut_across_reads(data, line):
    """An ANSI sequence or a UTF-8 character cut in two by the transport's chunking."""
    for cut in range(len(data)):
        reader = synced()
        reader.receive_data(data[:cut], T)
        reader.receive_data(data[cut:], T)
        assert streamed(reader.events_received()) == [line]


def test_runaway_output_is_cut():
    """A line with no newline past MAX_REPLY_CHARS is emitted as it is; a reply keeps at
    most MAX_REPLY_CHARS characters of lines."""
    reader = synced()
    reader.receive_data(b"x" * (MAX_REPLY_CHARS + 1), T)
    assert [len(text) for text in streamed(reader.events_received())] == [MAX_REPLY_CHARS + 1]
    chunk = "y" * (MAX_REPLY_CHARS // 4) + "\n"
    [answer] = answers(exchange(reader, "users", chunk * 6 + "Night Market>"))
    assert sum(map(len, answer.lines)) <= MAX_REPLY_CHARS


# -- the end, giving up, refusing ----------------------------------------------------------


def test_end_of_output_interrupts_the_command():
    """The console dying mid-command ends it at once; a partial line is kept, a prompt not."""
    reader = synced()
    exchange(reader, "restart", "Restarting half a li")
    reader.receive_eof()
    events = reader.events_received()
    assert events == [
        Line("Night Market>restart", True), Line("Restarting half a li", True), Closed("restart"),
    ]
    reader.receive_data(b"late\n", T)
    assert reader.events_received() == [] and reader.closed
    idle = synced()
    idle.receive_data(b"Night Market>", T)
    idle.receive_eof()
    assert idle.events_received() == [Closed(None)]


def test_abandoned_reply_becomes_idle_output():
    """After the caller gave up (its deadline), late output is streamed, not an answer."""
    reader = synced()
    exchange(reader, "save", "", stream=False)
    reader.abandon()
    reader.receive_data(b"Saved\nNight Market>", T)
    events = reader.events_received()
    assert answers(events) == [] and streamed(events) == ["Saved"]


@pytest.mark.parametrize("command", ["users\nshutdown", "users\rshutdown", "a\x00b", "a\u2028b"])
def test_a_command_is_always_one_line(command):
    """A control character is refused before anything is sent; the reader stays usable."""
    reader = synced()
    with pytest.raises(ValueError):
        reader.send_command(command)
    assert reader.data_to_send() == [] and reader.events_received() == []
    assert answers(exchange(reader, "worlds", WORLDS + "Night Market>"))


def test_one_command_at_a_time():
    """A second command while one is being answered is a caller's mistake."""
    reader = synced()
    reader.send_command("save")
    with pytest.raises(RuntimeError):
        reader.send_command("worlds")
