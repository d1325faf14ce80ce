"""Scraping ``/metrics`` in tests: a plain HTTP GET, parsed with prometheus-client's parser."""

from __future__ import annotations

import asyncio
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

#: Seconds a scrape may take in a test: a scrape is milliseconds; this only bounds a hang.
SCRAPE_WAIT: Final = 10.0

#: One sample: its name and its labels, sorted.
Key = tuple[str, tuple[tuple[str, str], ...]]


async def get(
    port: int, path: str = "/metrics", *, headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """``GET path`` on ``host:port``: status, headers (lowercase names) and body."""
    sent = {"Host": f"{host}:{port}", "Connection": "close", **(headers or {})}
    async with asyncio.timeout(SCRAPE_WAIT):
        reader, writer = await asyncio.open_connection(host, port)
        head = "".join(f"{name}: {value}\r\n" for name, value in sent.items())
        writer.write(f"GET {path} HTTP/1.1\r\n{head}\r\n".encode())
        await writer.drain()
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        got = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                got[name.strip().lower()] = value.strip()
        length = int(got.get("content-length", "-1"))
        body = await (reader.readexactly(length) if length >= 0 else reader.read())
        writer.close()
    return status, got, body


def parse(text: str) -> dict[Key, float]:
    """Every sample of a text exposition, keyed by name and labels."""
    samples: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(port: int, *, token: str | None = None) -> dict[Key, float]:
    """The samples ``/metrics`` on ``port`` serves (asserting a 200)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    status, _, body = await get(port, headers=headers)
    assert status == 200, (status, body[:200])
    return parse(body.decode())


def value(samples: dict[Key, float], name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a labelled child not created yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
