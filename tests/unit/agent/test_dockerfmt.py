"""Reading what the Docker engine sends (attach frames, stats, times, exits), without an engine."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from resofleet.agent.runtime.dockerfmt import (
    STDERR,
    Demultiplexer,
    cpu_percent,
    docker_time_ns,
    exit_reason,
    memory_usage,
)

STREAM = (b"\x01\x00\x00\x00\x00\x00\x00\x06echo:x" + b"\x02\x00\x00\x00\x00\x00\x00\x03err"
          + b"\x01\x00\x00\x00\x00\x00\x00\x01\n")


@pytest.mark.parametrize("size", [1, 3, 8, 9, len(STREAM)])
def test_demultiplexer_takes_any_chunking(size):
    """Frames come out whole and in order, whatever the reads cut (headers included)."""
    demux = Demultiplexer()
    pieces = [p for i in range(0, len(STREAM), size) for p in demux.feed(STREAM[i:i + size])]
    assert pieces == [(1, b"echo:x"), (STDERR, b"err"), (1, b"\n")]


def test_demultiplexer_holds_a_partial_frame():
    """A frame whose payload has not all arrived is not passed on, not even in part."""
    demux = Demultiplexer()
    assert demux.feed(STREAM[:12]) == []
    assert demux.feed(STREAM[12:14]) == [(1, b"echo:x")]


def test_empty_frame():
    """A frame with no payload is still a frame."""
    assert Demultiplexer().feed(b"\x01\x00\x00\x00\x00\x00\x00\x00") == [(1, b"")]


SAMPLE = {
    "cpu_stats": {"cpu_usage": {"total_usage": 3_000, "percpu_usage": [1, 2]},
                  "system_cpu_usage": 20_000, "online_cpus": 2},
    "precpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 10_000},
    "memory_stats": {"usage": 1000, "limit": 4000, "stats": {"total_inactive_file": 200}},
}


def test_cpu_percent_as_docker_stats():
    """CPU delta over system delta, times the CPUs: 100 % is one core busy."""
    assert cpu_percent(SAMPLE) == pytest.approx(40.0)


def test_cpu_count_falls_back_to_the_per_cpu_list():
    """Without ``online_cpus`` (older engines) the CPUs are counted from ``percpu_usage``."""
    sample = {**SAMPLE, "cpu_stats": {**SAMPLE["cpu_stats"]}}
    del sample["cpu_stats"]["online_cpus"]
    assert cpu_percent(sample) == pytest.approx(40.0)


@pytest.mark.parametrize("sample", [
    {"cpu_stats": {"cpu_usage": {"total_usage": 0}}, "precpu_stats": {}},  # an exited container
    {},
    {**SAMPLE, "precpu_stats": {"cpu_usage": {"total_usage": 3_000}, "system_cpu_usage": 10_000}},
    {**SAMPLE, "precpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 20_000}},
])
def test_cpu_percent_without_two_samples_is_zero(sample):
    """A missing figure or no progress between the samples reads 0, never an error."""
    assert cpu_percent(sample) == 0.0


def test_memory_leaves_out_the_inactive_page_cache():
    """cgroup v1 says ``total_inactive_file``, v2 ``inactive_file``."""
    assert memory_usage(SAMPLE) == (800, 4000)
    v2 = {"memory_stats": {"usage": 1000, "limit": 4000, "stats": {"inactive_file": 300}}}
    assert memory_usage(v2) == (700, 4000)


def test_memory_unknown_is_zero():
    """No memory figures (an exited container) read as nothing used of nothing."""
    assert memory_usage({"memory_stats": {}}) == (0, 0) == memory_usage({})


def test_docker_time_keeps_its_nanoseconds():
    """StartedAt compares with the events' timeNano to the nanosecond."""
    seconds = int(datetime(2026, 5, 27, 13, 0, 1, tzinfo=timezone.utc).timestamp())
    assert docker_time_ns("2026-05-27T13:00:01.123456789Z") == seconds * 10**9 + 123456789
    assert docker_time_ns("2026-05-27T13:00:01Z") == seconds * 10**9
    assert docker_time_ns("2026-05-27T15:00:01.5+02:00") == seconds * 10**9 + 500_000_000


@pytest.mark.parametrize("text", [None, "", "yesterday", "2026-05-27 13:00:01"])
def test_not_a_docker_time(text):
    """Anything but an RFC 3339 time with a zone gives None."""
    assert docker_time_ns(text) is None


def test_exit_reason():
    """What a client reads when a run ends; an out-of-memory kill says so."""
    assert exit_reason({"ExitCode": 137}) == "exited with code 137"
    assert exit_reason({"ExitCode": 137, "OOMKilled": True}) == "exited with code 137 (out of memory)"
    assert exit_reason({"ExitCode": "143"}, oom=True) == "exited with code 143 (out of memory)"
    assert exit_reason({}) == "exited with code ?"
