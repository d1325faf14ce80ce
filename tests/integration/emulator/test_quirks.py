"""The switchable quirks, chatter and activity, from a real emulator process."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from tests.integration.emulator.conftest import REPO, Spawn

NOISE_START = re.compile(rb"^(SIGNALR: |Running refresh on: |Updated: |\t|   at |$)")
SEEDED = ("--seed", "42", "--frozen-clock")


async def test_tty_echoes_commands_and_ends_lines_with_crlf(spawn: Spawn) -> None:
    """--tty: the command is echoed after the prompt, every line ends in CRLF; CRLF input is fine."""
    console = await spawn("--tty", *SEEDED)
    startup = await console.read_until(b"World running...\r\nNight Market>")
    assert b"\n" not in startup.replace(b"\r\n", b"")
    console.send("focus 0", end="\r\n")
    console.send("listbans", "bogus")
    await console.expect(
        b"focus 0\r\nHarbor Lounge>"
        b"listbans\r\n"
        b"[0]\tUsername: SpamBot\tUserID: U-SpamBot01\tMachineIds: 4q8w0e2r6t1y9u3i5o7p\r\n"
        b"Harbor Lounge>bogus\r\nUnknown command\r\nHarbor Lounge>")


async def test_first_command_after_startup_is_unknown(spawn: Spawn) -> None:
    """--first-command-quirk: the first command gets `Unknown command`, the next one works."""
    console = await spawn("--first-command-quirk", *SEEDED)
    await console.ready()
    console.send("version", "version")
    await console.expect(b"Unknown command\nNight Market>2026.5.27.1300\nNight Market>")


async def _noisy_session(spawn: Spawn, seed: str) -> bytes:
    console = await spawn("--seed", seed, "--frozen-clock", "--noise-rate", "1")
    await console.ready()
    console.send("worlds", "users", "listbans", "focus 0", "status", "shutdown")
    output = await console.read_to_eof()
    assert await console.wait() == 0
    return output


async def test_noise_is_injected_and_reproducible_under_a_seed(spawn: Spawn) -> None:
    """--noise-rate 1: every answer carries a log block; the same seed gives the same bytes."""
    first = await _noisy_session(spawn, "7")
    second = await _noisy_session(spawn, "7")
    other = await _noisy_session(spawn, "8")
    assert first == second
    assert first != other
    lines = first.split(b"\n")
    assert any(line.startswith(b"SIGNALR: ") or line.startswith(b"Running refresh on: ")
               or line.startswith(b"Updated: ") for line in lines)
    # The answers themselves are all still there, in order, between the noise.
    answer = [line for line in lines if not NOISE_START.match(line.split(b">")[-1])]
    assert any(b"[0] Harbor Lounge" in line for line in answer)
    assert any(line.endswith(b"Name: Harbor Lounge") for line in answer)


async def test_latency_delays_the_answer(spawn: Spawn) -> None:
    """--latency save=0.3: the prompt after `save` comes no sooner than 0.3 s."""
    console = await spawn("--latency", "save=0.3", *SEEDED)
    await console.ready()
    loop = asyncio.get_running_loop()
    started = loop.time()
    console.send("save")
    await console.expect(b"Night Market>")
    assert loop.time() - started >= 0.3


async def test_chatter_is_glued_after_the_idle_prompt(spawn: Spawn) -> None:
    """--chatter-rate: log lines arrive with no command sent, the first glued to the prompt."""
    console = await spawn("--chatter-rate", "200", *SEEDED)
    await console.ready()
    chatter = await console.read_until(b"\n")
    assert NOISE_START.match(chatter)
    console.send("version")
    data = await console.read_until(b"2026.5.27.1300\nNight Market>")
    # Chatter never splits a line of the answer: the answer line is whole.
    assert b"\n2026.5.27.1300\n" in data or data.startswith(b"2026.5.27.1300\n")


async def test_activity_changes_worlds_but_prints_nothing(spawn: Spawn) -> None:
    """Users join and leave (seen by polling `worlds`) without console lines."""
    console = await spawn("--activity-interval", "0.02", *SEEDED)
    await console.ready()
    console.send("worlds")
    first = await console.read_until(b"Night Market>")
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        console.send("worlds")
        data = await console.read_until(b"Night Market>")
        assert b"Joined" not in data and b"Left" not in data
        assert all(line.startswith(b"[") for line in data.split(b"\n")[:-1])
        if data != first:
            break
        assert asyncio.get_running_loop().time() < deadline, "nobody joined or left"
        await asyncio.sleep(0.05)


async def test_log_mode_shows_joins_until_enter(spawn: Spawn) -> None:
    """`log`: no prompt, joins and leaves are printed; the next line brings the prompt back."""
    console = await spawn("--activity-interval", "0.02", *SEEDED)
    await console.ready()
    console.send("log")
    line = await console.read_until(b"\n")
    assert re.match(rb"^User (Joined|Left) ", line)
    console.send("")
    await console.read_until(b"Night Market>")


async def test_restart_then_world_destroyed_until_focus(spawn: Spawn, tmp_path: Path) -> None:
    """quirks.restart_destroyed: the first command after a restart fails; focus fixes it."""
    scenario = tmp_path / "restart.toml"
    scenario.write_text(
        '[quirks]\nrestart_destroyed = true\nclose_destroyed = true\n'
        '[[worlds]]\nname = "Solo"\nuptime = "00:00:01"\n'
        '[[worlds]]\nname = "Duo"\n')
    console = await spawn("--scenario", str(scenario), *SEEDED)
    await console.ready(b"Duo>")
    console.send("restart", "users", "users", "restart", "focus 1", "users", "close")
    await console.expect(
        b"Duo>The world has been destroyed in the meanwhile\n"
        b"Duo>Headless\tID: U-Headless\tRole: Admin\tPresent: False\tPing: 0 ms"
        b"\tFPS: 60.00012\tSilenced: False\n"
        b"Duo>Duo>Duo>Headless\tID: U-Headless\tRole: Admin\tPresent: False\tPing: 0 ms"
        b"\tFPS: 60.00012\tSilenced: False\n"
        b"Duo>Solo>The world has been destroyed in the meanwhile\n")


async def test_busy_scenario_pads_hard_names(spawn: Spawn) -> None:
    """busy: rich text, `>`, `:`, CJK plus emoji (UTF-16) and a name past 32 columns."""
    console = await spawn("--scenario", "busy", "--noise-rate", "0", "--activity-interval", "0",
                          *SEEDED)
    await console.ready(b"Quiet Corner>")
    console.send("worlds")
    data = (await console.read_until(b"Quiet Corner>")).decode()
    lines = data.split("\n")
    assert lines[1].startswith("[1] The <color=#ff0000>Red</color> RoomUsers: 10\t")
    assert lines[2].startswith("[2] Club > Midnight: Vol. 2         Users: 9\t")
    # 8 CJK characters + space + emoji (2 UTF-16 units) = 11 units, so 21 spaces.
    assert lines[3].startswith("[3] 東京ナイトクラブ 🌃" + " " * 21 + "Users: 7\t")
    assert lines[4].startswith(
        "[4] An Extremely Long World Name That Goes On Past Thirty-TwoUsers: 4\t")
    assert lines[5] == "[5] Quiet Corner                    Users: 1\tPresent: 0\tAccessLevel: Private\tMaxUsers: 4"


async def test_no_worlds_means_an_empty_prompt_and_no_worlds_output(spawn: Spawn, tmp_path: Path) -> None:
    """A scenario without worlds: prompt `>`, `worlds` prints nothing."""
    scenario = tmp_path / "empty.toml"
    scenario.write_text('version = "2025.6.1.1"\n')
    console = await spawn("--scenario", str(scenario), *SEEDED)
    startup = await console.read_until(b"Logged in as Headless\n>")
    assert b"World running..." not in startup
    console.send("worlds", "status")
    await console.expect(b">No world is currently focused\n>")


async def test_bad_scenario_key_is_one_line_on_stderr(spawn: Spawn, tmp_path: Path) -> None:
    """An unknown key: exit 2 and one stderr line naming the file and the key."""
    scenario = tmp_path / "typo.toml"
    scenario.write_text("[quirks]\nfirst_comand_unknown = true\n")
    console = await spawn("--scenario", str(scenario))
    assert await console.wait() == 2
    err = (await console.stderr()).decode()
    assert err.count("\n") == 1
    assert str(scenario) in err and "quirks.first_comand_unknown" in err


async def test_resofleet_emulator_subcommand(spawn: Spawn) -> None:
    """`resofleet emulator --scenario demo` runs the same console."""
    resofleet = Path(sys.executable).with_name("resofleet")
    argv = [str(resofleet)] if resofleet.exists() else [sys.executable, "-m", "resofleet"]
    console = await spawn(argv=[*argv, "emulator", "--scenario", "demo", "--seed", "1"])
    await console.ready()
    console.send("shutdown")
    assert (await console.read_to_eof()).startswith(b"Exiting. Save Homes: False\n")
    assert await console.wait() == 0
    assert REPO.is_dir()


async def test_sigterm_ends_quickly_and_quietly(spawn: Spawn) -> None:
    """SIGTERM (docker stop) ends the emulator at once with 143 and no traceback."""
    console = await spawn(*SEEDED)
    await console.ready()
    console.process.terminate()
    assert await console.wait() == 143
    assert await console.stderr() == b""


async def test_bad_world_url_can_wedge_the_console(spawn: Spawn, tmp_path: Path) -> None:
    """quirks.wedge_on_bad_url: no answer, no prompt, ever; EOF still exits 0."""
    scenario = tmp_path / "wedge.toml"
    scenario.write_text('[quirks]\nwedge_on_bad_url = true\n[[worlds]]\nname = "W"\n')
    console = await spawn("--scenario", str(scenario), *SEEDED)
    await console.ready(b"W>")
    console.send("startWorldURL not-a-url", "version")
    await console.close_stdin()
    assert await console.read_to_eof() == b""
    assert await console.wait() == 0


async def test_ansi_colours_on_log_lines_in_tty_mode(spawn: Spawn, tmp_path: Path) -> None:
    """quirks.ansi_colors with --tty: engine log lines carry CSI colour codes, answers do not."""
    scenario = tmp_path / "ansi.toml"
    scenario.write_text('[quirks]\nansi_colors = true\n[[worlds]]\nname = "W"\n')
    console = await spawn("--scenario", str(scenario), "--tty", "--noise-rate", "1", *SEEDED)
    startup = await console.read_until(b"W>")
    assert b"\x1b[37mEngine Ready!\x1b[0m\r\n" in startup
    console.send("version")
    data = await console.read_until(b"W>")
    assert b"\x1b[37m" in data and b"\r\n2026.5.27.1300\r\n" in data
