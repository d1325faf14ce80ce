"""`resofleet console` sending bulk commands (`--servers`, `/bulk`) to `resofleet up`
serving several emulated servers, each a real process."""

from __future__ import annotations

import asyncio

from .test_commands import clean_env, resofleet, running

FLEET_TOML = """
[[servers]]
id = "eu-1"
runtime = "emulator"
[[servers]]
id = "eu-2"
runtime = "emulator"
[[servers]]
id = "lab"
runtime = "emulator"
"""


async def console(url: str, script: bytes, *args: str, cwd) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *resofleet(), "console", "--url", url, *args, cwd=cwd, env=clean_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(script)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_console_sends_bulk_commands_and_says_how_each_server_answered(tmp_path):
    """`--servers eu-*` sends each line to both eu servers, `/bulk` one line to its
    patterns; every answer is labelled with its server, then a summary; a bulk request
    with a failed server, or matching nothing, makes the script exit 1."""
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET_TOML, encoding="utf-8")
    async with running("up", "--config", str(config), "--port", "0", cwd=tmp_path, env=clean_env()) as up:
        code, out, err = await console(up.url, b"save\n/bulk eu-1,lab users\n", "--servers", "eu-*", cwd=tmp_path)
        assert code == 0, (out, err)
        lines = out.splitlines()
        assert "[eu-1] (done, no output)" in lines and "[eu-2] (done, no output)" in lines
        assert lines.count("bulk: 2 ok") == 2
        assert any(line.startswith("[lab] ") and "ID: U-" in line for line in lines)
        assert not any(line.startswith("[eu-2] ") and "ID: U-" in line for line in lines)

        code, out, err = await console(up.url, b"/container restart\n", "--servers", "eu-2", "lab", cwd=tmp_path)
        assert code == 0, (out, err)
        assert "[eu-2] container restart: running" in out and "[lab] container restart: running" in out
        assert "bulk: 2 ok" in out

        code, out, err = await console(up.url, b"/bulk nope-* save\n/bulk eu-*,zz-9 version\n", cwd=tmp_path)
        assert code == 1, (out, err)
        assert "error (unknown_server): No server matches 'nope-*'" in out
        assert "bulk: 2 ok; zz-9 server_offline" in out
        assert await up.stop() == 0
