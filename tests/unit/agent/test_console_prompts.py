"""Finding a prompt the driver does not know yet at the start of a line (no I/O)."""

from __future__ import annotations

import pytest

from resofleet.agent.console import _glued_prompt, _unglue_status_start


@pytest.mark.parametrize(
    ("line", "prompt"),
    [
        ("Night Market>SIGNALR: BroadcastStatus - Contact status for U-x.", "Night Market>"),
        ("Harbor Lounge>Updated: 1 -> 2", "Harbor Lounge>"),
        ("Harbor Lounge>Running refresh on: OwnerId: U-x, Path: Inventory", "Harbor Lounge>"),
        ("Harbor Lounge>   at FrooxEngine.World.Update()", "Harbor Lounge>"),
        ("Club > Midnight: Vol. 2>SIGNALR: x", "Club > Midnight: Vol. 2>"),
        ("The <color=#ff0000>Red</color> Room>SIGNALR: x", "The <color=#ff0000>Red</color> Room>"),
        ("東京ナイトクラブ 🌃>Updated: a -> b", "東京ナイトクラブ 🌃>"),
        (">SIGNALR: x", ">"),  # no focused world
        ("A>SIGNALR: x", "A>"),
    ],
)
def test_prompt_glued_to_a_log_line(line, prompt):
    """A prompt ends at the first '>' that a recognised engine log line follows."""
    assert _glued_prompt(line) == prompt


@pytest.mark.parametrize(
    "line",
    [
        "Updated: Offline -> Online",  # a log line with '>' in it is no prompt
        "Updated: 1 -> 2",
        "World running...",
        "Night Market>",  # a bare prompt has nothing glued to it
        "Night Market>worlds",  # a command echo, not chatter
        "Harbor Lounge>Name: Harbor Lounge",
        "Starting world: A > B",
        "",
    ],
)
def test_no_prompt_glued_to_a_log_line(line):
    """Lines without a prompt followed by a log line give None."""
    assert _glued_prompt(line) is None


@pytest.mark.parametrize(
    ("line", "unglued"),
    [
        ("Harbor Lounge>Name: Harbor Lounge", "Name: Harbor Lounge"),
        ("X>Name: X", "Name: X"),
        ("Club > Name: Club >Name: Club > Name: Club ", "Name: Club > Name: Club "),
        ("Name: Harbor Lounge", "Name: Harbor Lounge"),
        ("Other>Name: Harbor Lounge", "Other>Name: Harbor Lounge"),  # not its own prompt
    ],
)
def test_status_answered_on_the_first_prompts_line(line, unglued):
    """``X>Name: X`` is a status answer glued to the prompt it was typed at."""
    assert _unglue_status_start(line) == unglued
