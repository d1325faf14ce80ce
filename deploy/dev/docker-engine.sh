#!/usr/bin/env bash
# Bring up a real Docker engine on this machine (and on CI) and make the local
# base image resofleet-base:local. Idempotent: a second run only checks.
#
#   sudo bash deploy/dev/docker-engine.sh            # progress on stderr
#   eval "$(bash deploy/dev/docker-engine.sh)"       # exports nothing else
#
# stdout: exactly one line, RESOFLEET_DOCKER_BASE_IMAGE=resofleet-base:local
# stderr: progress ("docker-engine: ...") and, on failure, ONE line
#         "docker-engine: ERROR: <why>"; the exit code is then non-zero.
#
# Environment knobs (all optional):
#   RESOFLEET_DOCKER_STORAGE_DRIVER  overlay2|vfs (default: overlay2 if the
#                                    kernel mounts overlayfs here, else vfs)
#   RESOFLEET_DOCKERD_TIMEOUT        seconds to wait for `docker info` (60)
#   RESOFLEET_DOCKERD_LOG            dockerd log file (/var/log/resofleet-dockerd.log)
#   RESOFLEET_DEBIAN_MIRROR          mirror for debootstrap (from apt sources)
#   RESOFLEET_DOCKER_REBUILD_BASE=1  rebuild resofleet-base:local
#
# dockerd runs with --iptables=false --bridge=none: it never touches the
# host's firewall and has no bridge network, so containers must use
# network_mode "none" or "host". See deploy/dev/DOCKER-NOTES.md.
set -uo pipefail

IMAGE=resofleet-base:local
SOCK=/var/run/docker.sock
LOG=${RESOFLEET_DOCKERD_LOG:-/var/log/resofleet-dockerd.log}
TIMEOUT=${RESOFLEET_DOCKERD_TIMEOUT:-60}
WORK=/var/cache/resofleet-docker
T0=$(date +%s.%N)

say() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { printf 'docker-engine: ERROR: %s\n' "$*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1fs", b-a}'; }
step() { STEP_T=$(date +%s.%N); say "$*"; }
done_step() { say "  ... done in $(since "$STEP_T")"; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages and starts dockerd); run: sudo bash $0"
[ "$(uname -s)" = Linux ] || die "needs Linux, this is $(uname -s)"

# Never let a caller's DOCKER_HOST/context point the checks elsewhere.
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
# Any docker client works: /usr/local/bin/docker (newer CLI) negotiates the
# API version down to the engine's; /usr/bin/docker comes with docker.io.
docker_() { command docker -H "unix://$SOCK" "$@"; }

# One run at a time (several engineers / test sessions may call this at once).
mkdir -p "$WORK"
exec 9>"$WORK/lock"
flock -w 600 9 || die "another docker-engine.sh run held $WORK/lock for 600 s"

# ---------------------------------------------------------------- 1. packages
need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v containerd >/dev/null 2>&1 || need_pkgs+=(containerd)
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v docker >/dev/null 2>&1 || need_pkgs+=(docker.io)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    step "installing ${need_pkgs[*]} (apt log: $WORK/apt.log)"
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-q -o DPkg::Lock::Timeout=300)
    ok=
    for _ in 1 2 3; do   # the lists lock may be held by another apt for a moment
        apt-get "${apt_opts[@]}" update >"$WORK/apt.log" 2>&1 && { ok=1; break; }
        sleep 5
    done
    [ -n "$ok" ] || die "apt-get update failed: $(tail -n1 "$WORK/apt.log")"
    avail=$(apt-cache policy docker.io debootstrap | awk '/Candidate:/{print $2}' | tr '\n' ' ')
    case "$avail" in *"(none)"*|"") die "docker.io/debootstrap not available from the apt sources (candidates: $avail)";; esac
    # Keep the package's init script from starting dockerd with its defaults
    # (overlay2 + iptables + docker0); we start it ourselves below.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${need_pkgs[@]}" >>"$WORK/apt.log" 2>&1
    rc=$?
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ $rc = 0 ] || die "apt-get install ${need_pkgs[*]} failed: $(grep -E '^E:' "$WORK/apt.log" | tail -n1)"
    hash -r
    done_step
else
    say "packages present: $(command -v dockerd) $(command -v debootstrap)"
fi

# ------------------------------------------------------------------ 2. engine
pick_driver() {
    if [ -n "${RESOFLEET_DOCKER_STORAGE_DRIVER:-}" ]; then echo "$RESOFLEET_DOCKER_STORAGE_DRIVER"; return; fi
    # overlay2 is much faster than vfs (vfs copies the whole image per
    # container); use it when overlayfs mounts on the filesystem of /var/lib/docker.
    local d; mkdir -p /var/lib/docker
    d=$(mktemp -d /var/lib/docker/.ovl-probe.XXXXXX) || { echo vfs; return; }
    mkdir -p "$d/l" "$d/u" "$d/w" "$d/m"
    if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null; then
        umount "$d/m"; rm -rf "$d"; echo overlay2
    else
        rm -rf "$d"; echo vfs
    fi
}

# A process that exists and is not a zombie (a killed dockerd can linger as one).
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }
engine_up() { timeout 10 docker -H "unix://$SOCK" info >/dev/null 2>&1; }

if engine_up; then
    say "engine already answering on $SOCK ($(docker_ info --format '{{.ServerVersion}} {{.Driver}}' 2>/dev/null))"
else
    [ -e /sys/fs/cgroup ] || die "no cgroup filesystem at /sys/fs/cgroup: this kernel/sandbox cannot run containers"
    running=
    for pid in $(cat /var/run/docker.pid 2>/dev/null) $(pgrep -x dockerd || true); do
        if alive "$pid" && [ "$(ps -o comm= -p "$pid")" = dockerd ]; then running=$pid; break; fi
    done
    if [ -n "$running" ]; then
        step "dockerd (pid $running) is running but not answering yet; waiting"
    else
        driver=$(pick_driver)
        step "starting dockerd --storage-driver=$driver --iptables=false --bridge=none (log: $LOG)"
        mkdir -p "$(dirname "$LOG")"
        # Stale pid file / socket from a killed dockerd would stop it starting.
        rm -f /var/run/docker.pid
        # dockerd reuses the containerd named in this pid file while kill -0
        # succeeds, which it does for a zombie: then it times out. Drop it.
        cpid=$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null || true)
        if [ -n "$cpid" ] && ! alive "$cpid"; then rm -f /var/run/docker/containerd/containerd.pid; fi
        printf '\n==== %s docker-engine.sh starting dockerd (%s)\n' "$(date -Is)" "$driver" >>"$LOG"
        setsid nohup dockerd --host="unix://$SOCK" --storage-driver="$driver" \
            --iptables=false --ip-masq=false --bridge=none \
            </dev/null >>"$LOG" 2>&1 9>&- &
        running=$!
    fi
    deadline=$(( $(date +%s) + TIMEOUT ))
    until engine_up; do
        if ! alive "$running"; then
            why=$(awk '/^==== /{n=NR} {l[NR]=$0} END{for(i=n;i<=NR;i++) print l[i]}' "$LOG" \
                  | grep -E 'level=(fatal|error)|failed to start' | tail -n1 | sed -E 's/.*msg="?//; s/"$//')
            die "dockerd exited while starting (${why:-see $LOG}); full log: $LOG"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            die "dockerd (pid $running) did not answer 'docker info' within ${TIMEOUT}s; see $LOG"
        fi
        sleep 0.5
    done
    done_step
fi
[ -S "$SOCK" ] || die "engine answers but $SOCK is not a socket (the Python SDK's default); check DOCKER_HOST/dockerd -H"

# -------------------------------------------------------------- 3. base image
check_image() {
    docker_ run --rm --network none --entrypoint python3 "$IMAGE" -c \
        'import sys, tomllib, asyncio, json, argparse, random, shlex, threading, selectors, pty, termios, signal, socket, subprocess, logging
assert sys.version_info >= (3, 11), sys.version
print("python", sys.version.split()[0])' 2>&1
}

if [ "${RESOFLEET_DOCKER_REBUILD_BASE:-0}" = 1 ]; then
    docker_ image rm -f "$IMAGE" >/dev/null 2>&1 || true
fi
if docker_ image inspect "$IMAGE" >/dev/null 2>&1; then
    say "image $IMAGE present"
else
    # shellcheck disable=SC1091
    . /etc/os-release
    suite=${VERSION_CODENAME:-}
    [ -n "$suite" ] || die "cannot tell the Debian release from /etc/os-release (no VERSION_CODENAME)"
    TARBALL="$WORK/base-$suite-minbase-python3.tar"
    mirror=${RESOFLEET_DEBIAN_MIRROR:-}
    if [ -z "$mirror" ]; then
        # First URI of the main Debian archive in the apt sources (deb822 or one-line).
        mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/{for(i=2;i<=NF;i++) print $i}' | grep -v -- '-security' | grep -m1 '/debian/*$' || true)
        [ -n "$mirror" ] || mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; break}}' | grep -v -- '-security' | grep -m1 '/debian/*$' || true)
        mirror=${mirror:-http://deb.debian.org/debian}
    fi
    pyver=$(apt-cache policy python3-minimal 2>/dev/null | awk '/Candidate:/{print $2}')
    # python3-minimal alone lacks most of the stdlib (asyncio, tomllib, ...):
    # libpython3-stdlib (-> libpython3.X-stdlib) carries it.
    stdlib=libpython3-stdlib
    if [ -s "$TARBALL" ] && [ "${RESOFLEET_DOCKER_REBUILD_BASE:-0}" != 1 ]; then
        say "reusing root filesystem $TARBALL (RESOFLEET_DOCKER_REBUILD_BASE=1 redoes debootstrap)"
    else
        step "debootstrap $suite (minbase + python3-minimal,$stdlib; python3 $pyver) from $mirror"
        root="$WORK/rootfs"
        rm -rf "$root"
        mkdir -p "$WORK/debs"
        if ! debootstrap --variant=minbase --include="python3-minimal,$stdlib" \
                --cache-dir="$WORK/debs" "$suite" "$root" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
            die "debootstrap $suite from $mirror failed: $(grep -E '^E:' "$WORK/debootstrap.log" | tail -n1) (log: $WORK/debootstrap.log)"
        fi
        done_step
        say "trimming the root filesystem and saving it as $TARBALL"
        rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
               "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
               "$root"/var/log/* "$root"/tmp/* 2>/dev/null
        printf '%s\n' "$mirror $suite" >"$root/etc/resofleet-base"
        tar -C "$root" --numeric-owner -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL" \
            || die "cannot write $TARBALL"
        rm -rf "$root"
    fi
    step "importing $TARBALL as $IMAGE"
    if ! docker_ import \
            --change 'ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1' \
            --change 'CMD ["python3"]' \
            --change "LABEL org.resofleet.base=debootstrap-$suite-minbase" \
            "$TARBALL" "$IMAGE" >/dev/null 2>"$WORK/import.err"; then
        die "docker import failed: $(tail -n1 "$WORK/import.err")"
    fi
    done_step
fi
step "checking python3 in $IMAGE"
out=$(check_image) || { docker_ image rm -f "$IMAGE" >/dev/null 2>&1; rm -f "$WORK"/base-*.tar; die "$IMAGE cannot run python3 with the stdlib needed (removed it; rerun rebuilds): $(printf '%s' "$out" | tail -n1)"; }
say "  $out"
done_step

say "ready in $(since "$T0"): engine $(docker_ info --format '{{.ServerVersion}} storage={{.Driver}} cgroup=v{{.CgroupVersion}}' 2>/dev/null) on $SOCK"
echo "RESOFLEET_DOCKER_BASE_IMAGE=$IMAGE"
