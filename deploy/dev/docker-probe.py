"""Probe the local Docker engine through the docker SDK, the way the agent uses it.

Run after deploy/dev/docker-engine.sh:  .venv/bin/python deploy/dev/docker-probe.py
Prints what it sees (attach with/without TTY, stats fields, events, restart,
stop); exits non-zero on the first thing that does not work. What it printed
on this machine is summed up in deploy/dev/DOCKER-NOTES.md.
"""

from __future__ import annotations

import json
import os
import queue
import select
import socket
import struct
import sys
import threading
import time

import docker

IMAGE = os.environ.get("RESOFLEET_DOCKER_BASE_IMAGE", "resofleet-base:local")
LABEL = {"org.resofleet.probe": "1"}
ECHO = (
    "import sys\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    line = sys.stdin.readline()\n"
    "    if not line:\n"
    "        print('eof', flush=True); break\n"
    "    print('echo:' + line.strip(), flush=True)\n"
)


def t(start: float) -> str:
    return f"{(time.monotonic() - start) * 1000:.0f} ms"


def raw(sock_io):
    """The real socket under what attach_socket returns (SocketIO / NpipeSocket)."""
    return getattr(sock_io, "_sock", sock_io)


def read_until(sock: socket.socket, needle: bytes, timeout: float = 5.0) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {needle!r} in {buf!r}")
        r, _, _ = select.select([sock], [], [], left)
        if r:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf


def demux(buf: bytes) -> list[tuple[int, bytes]]:
    """Split docker's multiplexed stream: 8-byte header [stream,0,0,0,len BE32]."""
    out = []
    while len(buf) >= 8:
        stream, size = struct.unpack(">BxxxL", buf[:8])
        out.append((stream, buf[8 : 8 + size]))
        buf = buf[8 + size :]
    return out


def main() -> int:
    s = time.monotonic()
    client = docker.from_env()
    v = client.version()
    print(f"from_env: {t(s)}; engine {v['Version']} API {v['ApiVersion']} (min {v.get('MinAPIVersion')});"
          f" SDK {docker.__version__} speaks API {client.api.api_version}")
    info = client.info()
    print(f"info: Driver={info['Driver']} CgroupVersion={info.get('CgroupVersion')}"
          f" CgroupDriver={info.get('CgroupDriver')} MemoryLimit={info.get('MemoryLimit')}"
          f" SwapLimit={info.get('SwapLimit')} CpuCfsQuota={info.get('CpuCfsQuota')}")
    for old in client.containers.list(all=True, filters={"label": "org.resofleet.probe"}):
        old.remove(force=True)

    # --- 1. TTY container, attach socket, exchange bytes ----------------------
    s = time.monotonic()
    c = client.containers.create(IMAGE, ["python3", "-u", "-c", ECHO], network_mode="none",
                                 tty=True, stdin_open=True, labels=LABEL, init=True,
                                 mem_limit="256m", nano_cpus=500_000_000)
    print(f"create (tty): {t(s)}")
    sio = c.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    sock = raw(sio)
    s = time.monotonic()
    c.start()
    print(f"start: {t(s)}")
    got = read_until(sock, b"ready")
    print(f"tty first output: {got!r}")
    s = time.monotonic()
    sock.sendall(b"hello tty\n")
    got = read_until(sock, b"echo:hello tty")
    print(f"tty round trip {t(s)}: {got!r}")
    # Ctrl-D on a TTY is EOF for the reader.
    sock.sendall(b"\x04")
    got = read_until(sock, b"eof")
    print(f"tty after ^D: {got!r}")
    sio.close()
    c.wait(timeout=10)
    c.reload()
    print(f"tty container exited: {c.attrs['State']['Status']} code={c.attrs['State']['ExitCode']}")
    c.remove(force=True)

    # --- 2. no TTY: multiplexed frames --------------------------------------
    c = client.containers.create(IMAGE, ["python3", "-u", "-c", ECHO], network_mode="none",
                                 tty=False, stdin_open=True, labels=LABEL)
    sio = c.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    sock = raw(sio)
    c.start()
    got = read_until(sock, b"ready")
    print(f"no-tty first output (raw): {got!r} -> {demux(got)}")
    sock.sendall(b"hello plain\n")
    got = read_until(sock, b"echo:hello plain")
    print(f"no-tty echo (raw): {got!r} -> {demux(got)}")
    # Half-close: does the container see EOF on stdin?
    sock.shutdown(socket.SHUT_WR)
    try:
        got = read_until(sock, b"eof", timeout=3)
        print(f"no-tty after shutdown(SHUT_WR): {demux(got)}")
    except TimeoutError as e:
        print(f"no-tty after shutdown(SHUT_WR): NO EOF seen in container ({e})")
    sio.close()
    c.remove(force=True)

    # --- 3. long-running container: stats, events, kill, restart, stop ------
    c = client.containers.run(IMAGE, ["python3", "-u", "-c", ECHO], network_mode="none",
                              tty=True, stdin_open=True, detach=True, labels=LABEL)
    time.sleep(0.5)
    s = time.monotonic()
    st = c.stats(stream=False)
    print(f"stats(stream=False): {t(s)}")
    print("stats keys:", sorted(st))
    print("cpu_stats:", json.dumps(st["cpu_stats"]))
    print("precpu_stats:", json.dumps(st["precpu_stats"]))
    print("memory_stats:", json.dumps(st["memory_stats"]))
    print("pids_stats:", st.get("pids_stats"), "networks:", st.get("networks"),
          "blkio:", json.dumps(st.get("blkio_stats"))[:200])
    s = time.monotonic()
    try:
        st1 = c.stats(stream=False, one_shot=True)
        print(f"stats(one_shot=True): {t(s)}; precpu system_cpu_usage="
              f"{st1['precpu_stats'].get('system_cpu_usage')}")
    except Exception as e:  # noqa: BLE001
        print(f"stats(one_shot=True): FAILED {type(e).__name__}: {e}")
    gen = c.stats(stream=True, decode=True)
    s = time.monotonic()
    samples = [next(gen) for _ in range(2)]
    print(f"stats(stream=True): 2 samples in {t(s)}")
    gen.close()

    def cpu_percent(st):
        cpu, pre = st["cpu_stats"], st["precpu_stats"]
        d_cpu = cpu["cpu_usage"]["total_usage"] - pre.get("cpu_usage", {}).get("total_usage", 0)
        d_sys = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        n = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
        return (d_cpu / d_sys) * n * 100.0 if d_sys > 0 and d_cpu >= 0 else 0.0

    def mem_usage(st):
        m = st["memory_stats"]
        stats = m.get("stats", {})
        # docker CLI >= 20.10: cgroup v1 subtracts total_inactive_file, v2 inactive_file.
        if "total_inactive_file" in stats and stats["total_inactive_file"] < m["usage"]:
            return m["usage"] - stats["total_inactive_file"]
        if "inactive_file" in stats and stats["inactive_file"] < m["usage"]:
            return m["usage"] - stats["inactive_file"]
        return m["usage"]

    print(f"cpu% = {cpu_percent(samples[-1]):.2f}  mem = {mem_usage(samples[-1])}"
          f" / limit {samples[-1]['memory_stats'].get('limit')}")

    got: queue.Queue = queue.Queue()
    since = int(time.time()) - 1
    ev = client.events(decode=True, since=since,
                       filters={"container": c.id, "event": ["die", "kill", "start", "restart", "stop"]})

    def pump():
        for e in ev:
            got.put(e)

    threading.Thread(target=pump, daemon=True).start()
    time.sleep(0.3)
    s = time.monotonic()
    c.kill()
    while True:
        e = got.get(timeout=10)
        print(f"event after kill +{t(s)}: status={e.get('status')} Action={e.get('Action')}"
              f" Type={e.get('Type')} exitCode={e.get('Actor', {}).get('Attributes', {}).get('exitCode')}"
              f" keys={sorted(e)} attrs={sorted(e.get('Actor', {}).get('Attributes', {}))}")
        if e.get("Action") == "die":
            break
    c.reload()
    print(f"after kill: Status={c.status} ExitCode={c.attrs['State']['ExitCode']}"
          f" OOMKilled={c.attrs['State']['OOMKilled']}")
    s = time.monotonic()
    c.restart(timeout=2)
    c.reload()
    print(f"restart of exited container: {t(s)} -> {c.status}, RestartCount={c.attrs['RestartCount']}")
    sio = c.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
    sock = raw(sio)
    sock.sendall(b"again\n")
    print(f"re-attach after restart: {read_until(sock, b'echo:again')!r}")
    sio.close()
    s = time.monotonic()
    c.restart(timeout=2)
    c.reload()
    print(f"restart of running container (python3 as PID 1, no init, ignores SIGTERM): {t(s)} -> {c.status}")
    s = time.monotonic()
    c.stop(timeout=1)
    c.reload()
    print(f"stop(timeout=1): {t(s)} -> {c.status} ExitCode={c.attrs['State']['ExitCode']}")
    time.sleep(0.5)
    while not got.empty():
        e = got.get()
        print(f"  later event: {e.get('Action')} exitCode={e.get('Actor', {}).get('Attributes', {}).get('exitCode')}")
    ev.close()
    c.remove(force=True)

    # --- 4. init=True: SIGTERM is honoured --------------------------------
    c = client.containers.run(IMAGE, ["python3", "-c", "import time; time.sleep(60)"], network_mode="none",
                              detach=True, init=True, labels=LABEL)
    s = time.monotonic()
    c.stop(timeout=5)
    c.reload()
    print(f"init=True stop: {t(s)} ExitCode={c.attrs['State']['ExitCode']}")
    c.remove(force=True)

    # --- 5. host network ----------------------------------------------------
    out = client.containers.run(IMAGE, ["python3", "-c", "import socket; print(socket.gethostname())"],
                                network_mode="host", remove=True)
    print(f"network_mode=host: ran, hostname={out.decode().strip()!r}")
    try:
        client.containers.run(IMAGE, ["true"], remove=True)
        print("default network (no network_mode): ran")
    except docker.errors.APIError as e:
        print(f"default network (no network_mode): FAILED {e.explanation}")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
