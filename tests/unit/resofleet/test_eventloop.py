"""Which event loop the services run on: uvloop where installed, asyncio's own on request
or where it is missing, and a clear error for anything else."""

from __future__ import annotations

import asyncio
import sys

import pytest

from resofleet.eventloop import EventLoopError, loop_factory, loop_name, run


async def _which() -> str:
    return loop_name(asyncio.get_running_loop())


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESOFLEET_EVENT_LOOP", raising=False)


def test_uvloop_by_default_where_it_is_installed() -> None:
    """Without RESOFLEET_EVENT_LOOP a service runs on uvloop (installed on Linux)."""
    pytest.importorskip("uvloop")
    assert run(_which()) == "uvloop"


@pytest.mark.parametrize("value", ["asyncio", " AsyncIO "])
def test_asyncio_when_asked(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """RESOFLEET_EVENT_LOOP=asyncio runs on asyncio's own loop (any case, spaces trimmed)."""
    monkeypatch.setenv("RESOFLEET_EVENT_LOOP", value)
    assert run(_which()) == "asyncio"


def test_asyncio_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where uvloop cannot be imported, ``auto`` falls back to asyncio without a word."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory("auto") is None
    assert run(_which()) == "asyncio"


def test_uvloop_asked_for_and_missing_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """RESOFLEET_EVENT_LOOP=uvloop where it is not installed is refused, saying how to fix it."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    monkeypatch.setenv("RESOFLEET_EVENT_LOOP", "uvloop")
    with pytest.raises(EventLoopError, match="uvloop is not installed"):
        run(_which())


def test_an_unknown_loop_is_an_error_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo is refused, not silently replaced by a default; the coroutine is not left
    unawaited (no RuntimeWarning)."""
    monkeypatch.setenv("RESOFLEET_EVENT_LOOP", "tokio")
    with pytest.raises(EventLoopError) as caught:
        run(_which())
    assert str(caught.value) == "RESOFLEET_EVENT_LOOP must be one of auto, uvloop, asyncio, not 'tokio'"


def test_the_result_comes_back() -> None:
    """run() returns what the coroutine returns, on either loop."""

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run(answer(), choice="asyncio") == 42
    if loop_factory("auto") is not None:
        assert run(answer(), choice="uvloop") == 42
