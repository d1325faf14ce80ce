"""check_world: a command's ``world`` against the worlds the console just listed. Pure."""

from __future__ import annotations

import pytest

from resofleet.agent.server import check_world
from resofleet.contracts import ContractError, ErrorCode

NAMES = ["Harbor Lounge", "Night Market"]


@pytest.mark.parametrize("world", [0, 1, "0", " 1 ", "+1", "Harbor Lounge", "Night Market"])
def test_a_listed_world_passes(world):
    """An index in range (a number, or digits as the console reads them) or a listed name."""
    check_world("alpha", world, NAMES)


@pytest.mark.parametrize(
    ("world", "names", "words"),
    [
        (2, NAMES, "no world at index 2 (it has 2 worlds)"),
        ("-1", NAMES, "no world at index -1 (it has 2 worlds)"),
        ("2024", NAMES, "no world at index 2024"),
        (0, [], "no world at index 0 (it has 0 worlds)"),
        (1, ["Solo"], "no world at index 1 (it has 1 world)"),
        ("No Such World", NAMES, "no world named 'No Such World'"),
        ("night market", NAMES, "no world named 'night market'"),  # names match exactly
        ("Harbor", NAMES, "no world named 'Harbor'"),
    ],
)
def test_an_unknown_world_is_unknown_world_saying_what_there_is(world, names, words):
    """The error is `unknown_world`, names the server and the world, and says how to list them."""
    with pytest.raises(ContractError) as info:
        check_world("alpha", world, names)
    assert info.value.code == ErrorCode.UNKNOWN_WORLD
    assert info.value.message.startswith("Server 'alpha' has ") and words in info.value.message
    assert info.value.message.endswith("get_worlds lists its worlds by index and name. Nothing was run.")
