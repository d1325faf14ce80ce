"""The benchmarks still run: `python -m bench all --quick`, as a newcomer would start it.

Figures are never asserted here (they are measured, in bench/); this only guards that
every benchmark starts what it needs, measures its baselines and prints its table.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from bench.__main__ import NAMES

#: Seconds the quick run may take: about 45 s here; a loaded CI machine gets room.
QUICK_TIMEOUT = 240.0


@pytest.mark.amqp
@pytest.mark.timeout(QUICK_TIMEOUT + 30)
async def test_every_benchmark_runs_and_prints_its_baselines(amqp_url: str, tmp_path: Path) -> None:
    """Each benchmark completes its quick run and reports figures next to baselines."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "RESOFLEET_AMQP_URL": amqp_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "all", "--quick", "--json", str(out),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(QUICK_TIMEOUT):
            output, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    tables = json.loads(out.read_text())["tables"]
    assert len(tables) == len(NAMES), text[-4000:]
    for table in tables:
        measured = [r for r in table["rows"] if r.get("baseline") is not None]
        assert measured, f"{table['title']}: no figure with a baseline from the same run"
        assert any(r["value"] > 0 and r["baseline"] > 0 for r in measured), table["title"]
        for row in measured:
            assert row["value"] >= 0 and row["baseline"] >= 0, row
