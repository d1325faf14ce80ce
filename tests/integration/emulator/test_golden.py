"""Golden tests: the exact bytes the real console prints, from a real emulator process.

All run the default scenario with a seed and a frozen clock (conftest ``console``),
whose worlds are the documented examples: Harbor Lounge (HarborHost, Mira,
Tobias) and Night Market (focused, because it starts last).
"""

from __future__ import annotations

from tests.integration.emulator.conftest import Console, Spawn

HARBOR_WORLDS = (
    b"[0] Harbor Lounge                   Users: 3\tPresent: 2\tAccessLevel: Anyone\tMaxUsers: 16\n"
    b"[1] Night Market                    Users: 1\tPresent: 0\tAccessLevel: Private\tMaxUsers: 4\n"
)
HARBOR_STATUS = (
    b"Name: Harbor Lounge\n"
    b"SessionID: S-3f2a9c4e-81b7-4d0a-9e55-2c1d7b8a6f01\n"
    b"Current Users: 3\n"
    b"Present Users: 2\n"
    b"Max Users: 16\n"
    b"Uptime: 1.02:03:04.5060708\n"
    b"Access Level: Anyone\n"
    b"Hidden from listing: False\n"
    b"Mobile Friendly: True\n"
    b"Description: A quiet place by the water\n"
    b"Tags: chill, music, harbor\n"
    b"Users: HarborHost, Mira, Tobias\n"
    b"ResoniteLink: off\n"
)
HARBOR_USERS = (
    b"HarborHost\tID: U-1a2B3c4D5e\tRole: Admin\tPresent: False\tPing: 0 ms\tFPS: 60.00012\tSilenced: False\n"
    b"Mira\tID: U-Mira\tRole: Builder\tPresent: True\tPing: 42 ms\tFPS: 72.49871\tSilenced: False\n"
    b"Tobias\tID: U-Tobias\tRole: Guest\tPresent: True\tPing: 87 ms\tFPS: 59.93127\tSilenced: False\n"
)


async def test_startup_ends_with_world_running_per_world_and_the_last_world_prompt(spawn: Spawn) -> None:
    """Startup: log lines, one `World running...` per world, then `Night Market>` without newline."""
    console = await spawn("--seed", "1")
    startup = await console.ready()
    assert startup.startswith(b"Initializing App: Beta 2026.5.27.1300\n")
    assert startup.count(b"World running...\n") == 2
    assert startup.endswith(b"World running...\nNight Market>")


async def test_worlds_exact_bytes(console: Console) -> None:
    """`worlds`: names padded to 32, glued to `Users:`, TAB-separated fields."""
    console.send("worlds")
    await console.expect(HARBOR_WORLDS + b"Night Market>")


async def test_status_exact_bytes(console: Console) -> None:
    """`status`: 13 lines from Name: to ResoniteLink:, TimeSpan uptime with days."""
    console.send("focus 0", "status")
    await console.expect(b"Harbor Lounge>" + HARBOR_STATUS + b"Harbor Lounge>")


async def test_status_of_empty_values_keeps_the_space(console: Console) -> None:
    """Empty description and tags print `Description: ` and `Tags: `; no day part under 24 h."""
    console.send("status")
    data = await console.read_until(b"ResoniteLink: off\nNight Market>")
    assert b"\nUptime: 02:30:00.1234567\n" in data
    assert b"\nDescription: \nTags: \n" in data


async def test_users_exact_bytes(console: Console) -> None:
    """`users`: the headless's own account first, TAB-separated, shortest float FPS."""
    console.send("focus 0", "users")
    await console.expect(b"Harbor Lounge>" + HARBOR_USERS + b"Harbor Lounge>")


async def test_listbans_exact_bytes(console: Console) -> None:
    """`listbans`: `[i]\\tUsername:...\\tUserID:...\\tMachineIds:...`."""
    console.send("listbans")
    await console.expect(
        b"[0]\tUsername: SpamBot\tUserID: U-SpamBot01\tMachineIds: 4q8w0e2r6t1y9u3i5o7p\n"
        b"Night Market>")


async def test_silent_commands_stack_prompts(console: Console) -> None:
    """Four silent commands then an unknown one: the real console's line, byte for byte."""
    console.send("focus 0", "maxUsers 8", "description calm", "awayKickInterval 5", "frobnicate")
    await console.expect(
        b"Harbor Lounge>Harbor Lounge>Harbor Lounge>Harbor Lounge>Unknown command\nHarbor Lounge>")


async def test_focus_and_rename_change_the_prompt(console: Console) -> None:
    """`focus 0` then `name` with a quoted name holding `:` and `>`: the prompt follows."""
    console.send("focus 0", 'name "Quay: A > B"', "worlds")
    await console.expect(
        b"Harbor Lounge>Quay: A > B>"
        b"[0] Quay: A > B                     Users: 3\tPresent: 2\tAccessLevel: Anyone\tMaxUsers: 16\n"
        b"[1] Night Market                    Users: 1\tPresent: 0\tAccessLevel: Private\tMaxUsers: 4\n"
        b"Quay: A > B>")


async def test_focus_by_name_and_its_errors(console: Console) -> None:
    """Focus by name; out-of-range index and unknown name print their errors."""
    console.send("focus 7", "focus Nowhere", 'focus "Harbor Lounge"')
    await console.expect(
        b"World index out of range\nNight Market>"
        b"World with this name does not exist\nNight Market>Harbor Lounge>")


async def test_commands_are_case_insensitive(console: Console) -> None:
    """`WORLDS` and `Worlds` are `worlds`."""
    console.send("WORLDS", "Worlds")
    await console.expect((HARBOR_WORLDS + b"Night Market>") * 2)


async def test_help_prints_three_lines_per_command(console: Console) -> None:
    """`help`: 55 commands, name, TAB description, TAB usage with trailing space when no args."""
    console.send("help")
    data = await console.read_until(b"\tUsage: log \nNight Market>")
    lines = data.removesuffix(b"Night Market>").decode().splitlines()
    assert len(lines) == 55 * 3
    assert lines[:3] == ["saveConfig", lines[1], "\tUsage: saveconfig [filename]"]
    assert lines[1].startswith("\t") and len(lines[1]) > 1
    assert lines[6:9][0] == "logout" and lines[8] == "\tUsage: logout "
    names = lines[::3]
    assert names[9] == "worlds" and names[-1] == "log"
    assert all(line.startswith("\tUsage: ") for line in lines[2::3])


async def test_write_command_replies(console: Console) -> None:
    """accessLevel, role, hideFromListing and their documented errors."""
    console.send("focus 0", "accesslevel contacts", "role mira moderator", "role Mira Overlord",
                 "hideFromListing true", "hideFromListing false", "maxUsers 999", "kick Nobody",
                 "tickRate 30", "gc")
    await console.expect(
        b"Harbor Lounge>World Harbor Lounge now has access level Contacts\n"
        b"Harbor Lounge>Mira now has role Moderator!\n"
        b"Harbor Lounge>Role Overlord isn't available\n"
        b"Harbor Lounge>World Harbor Lounge will now be hidden from listing\n"
        b"Harbor Lounge>World Harbor Lounge will now show in listing\n"
        b"Harbor Lounge>Invalid number. Must be within 1 and 256\n"
        b"Harbor Lounge>User not found\n"
        b"Harbor Lounge>Tick Rate Set!\n"
        b"Harbor Lounge>GC finished\n"
        b"Harbor Lounge>")


async def test_kick_prints_diagnostic_blank_line_trace_and_result(console: Console) -> None:
    """`kick`: a KickRequest line, a blank line, 20-25 `   at ` lines, `Mira kicked!`."""
    console.send("focus 0", "kick Mira")
    await console.expect(b"Harbor Lounge>")
    data = await console.read_until(b"Mira kicked!\nHarbor Lounge>")
    lines = data.decode().splitlines()
    assert lines[0].startswith("KickRequest: Mira")
    assert lines[1] == ""
    assert lines[-2:] == ["Mira kicked!", "Harbor Lounge>"]
    trace = lines[2:-2]
    assert 20 <= len(trace) <= 25 and all(line.startswith("   at ") for line in trace)
    console.send("users")
    users = await console.read_until(b"Harbor Lounge>")
    assert b"Mira\t" not in users and users.count(b"\n") == 2


async def test_ban_then_listbans_then_unban(console: Console) -> None:
    """`ban` ends `<U> banned!`, adds a listbans line; `unban` removes one matching ban."""
    console.send("focus 0", "ban Tobias")
    await console.read_until(b"Tobias banned!\nHarbor Lounge>")
    console.send("listbans", "unban Tobias", "unban Tobias")
    await console.expect(
        b"[0]\tUsername: SpamBot\tUserID: U-SpamBot01\tMachineIds: 4q8w0e2r6t1y9u3i5o7p\n"
        b"[1]\tUsername: Tobias\tUserID: U-Tobias\tMachineIds: 7h2k9d4m1p8s3x6z0q5w\n"
        b"Harbor Lounge>Removed 1 matching bans\nHarbor Lounge>Removed 0 matching bans\n"
        b"Harbor Lounge>")


async def test_logged_out_users_have_empty_ids(console: Console) -> None:
    """After `logout`, `users` prints `ID: ` followed directly by the TAB."""
    console.send("focus 0", "logout", "users")
    await console.expect(
        b"Harbor Lounge>Logged out\nHarbor Lounge>"
        b"HarborHost\tID: \tRole: Admin\tPresent: False\tPing: 0 ms\tFPS: 60.00012\tSilenced: False\n"
        b"Mira\tID: \tRole: Builder\tPresent: True\tPing: 42 ms\tFPS: 72.49871\tSilenced: False\n"
        b"Tobias\tID: \tRole: Guest\tPresent: True\tPing: 87 ms\tFPS: 59.93127\tSilenced: False\n"
        b"Harbor Lounge>")


async def test_start_world_template_opens_and_focuses_a_world(console: Console) -> None:
    """startWorldTemplate logs `World running...`, focuses the new world, uptime 0 when frozen."""
    console.send("startWorldTemplate grid")
    await console.read_until(b"World running...\nGrid>")
    console.send("worlds", "status")
    data = await console.read_until(b"ResoniteLink: off\nGrid>")
    assert b"[2] Grid                            Users: 1\tPresent: 0\tAccessLevel: Anyone" in data
    assert b"\nUptime: 00:00:00\n" in data


async def test_close_focuses_the_last_remaining_world(console: Console) -> None:
    """`close` is silent; the prompt shows the world that keeps focus."""
    console.send("close", "worlds")
    await console.expect(
        b"Harbor Lounge>"
        b"[0] Harbor Lounge                   Users: 3\tPresent: 2\tAccessLevel: Anyone\tMaxUsers: 16\n"
        b"Harbor Lounge>")


async def test_session_id_and_url_and_version(console: Console) -> None:
    """sessionID, sessionUrl (containing the id) and the bare build version."""
    console.send("sessionID", "sessionUrl", "version")
    await console.expect(
        b"S-9b1c7e22-4f3a-4c8d-b6e0-5a7d2c9f1e34\nNight Market>"
        b"ressession:///S-9b1c7e22-4f3a-4c8d-b6e0-5a7d2c9f1e34\nNight Market>"
        b"2026.5.27.1300\nNight Market>")


async def test_friend_requests_listed_and_accepted(console: Console) -> None:
    """friendRequests lists usernames; accepting empties it; a second accept fails."""
    console.send("friendRequests", "acceptFriendRequest Nadia", "acceptFriendRequest Nadia",
                 "friendRequests")
    await console.expect(
        b"Nadia\nNight Market>Request accepted!\nNight Market>"
        b"There's no friend request from this user\nNight Market>Night Market>")


async def test_shutdown_prints_its_sequence_no_prompt_and_exits_0(console: Console) -> None:
    """`shutdown`: Exiting..., Shutdown requested, a trace, Shutting down; exit 0, no prompt."""
    console.send("shutdown")
    data = await console.read_to_eof()
    assert data.startswith(b"Exiting. Save Homes: False\n")
    assert b"\nShutdown requested\n\n   at " in data
    assert b"\nShutting down\n" in data
    assert data.endswith(b"\n") and not data.endswith(b">")
    assert await console.wait() == 0
    assert await console.stderr() == b""


async def test_crash_exits_at_once_non_zero(console: Console) -> None:
    """`crash`: no output, no prompt, a non-zero exit code."""
    console.send("crash")
    assert await console.read_to_eof() == b""
    assert await console.wait() != 0


async def test_stdin_eof_exits_0_silently(console: Console) -> None:
    """Closing stdin ends the emulator with 0 and nothing on stderr."""
    await console.close_stdin()
    assert await console.read_to_eof() == b""
    assert await console.wait() == 0
    assert await console.stderr() == b""
