"""Start and stop one Ray head on loopback, addressed by its temp dir (for a laptop, a shared dev box, the tests).

  python -m deploy.head start --temp-dir /tmp/rayhead [--port 6380 --dashboard-port 8266 --num-cpus 8]
  python -m deploy.head stop --temp-dir /tmp/rayhead
  python -m deploy.head listeners --temp-dir /tmp/rayhead     # every TCP socket the head's processes listen on

Why not `ray stop`: it terminates every Ray process on the machine by name (other users' clusters, other test
sessions' instances). `stop` here signals only the processes whose command line names this head's temp dir, and
their descendants (agents, workers, job drivers). The temp dir must be short: Ray puts Unix sockets under
<temp-dir>/session_<date>_<pid>/sockets/, and a socket path may not exceed 107 bytes on Linux.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# the same loopback/auth environment as common/cluster.py's LOCAL_ENV (not imported: that module imports ray)
HEAD_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo",
            "RAY_USAGE_STATS_ENABLED": "0"}
MAX_TEMP_DIR = 40  # leaves room for "/session_2026-01-01_00-00-00_000000_1234567/sockets/plasma_store" (< 107 bytes)
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `ray start` / `ray job submit`: no RAY_ADDRESS pointing at another cluster, the loopback/auth
    settings (read by Ray when it starts, so they must be in the environment of `ray start` itself), and this
    interpreter's bin dir first on PATH so that a job's `python` is the project's venv."""
    env = {k: v for k, v in (base if base is not None else os.environ).items() if k != "RAY_ADDRESS"}
    env.update(HEAD_ENV)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def ray_cli() -> str:
    return str(Path(sys.executable).parent / "ray")


def start_head(temp_dir: str, *, port: int, dashboard_port: int, num_cpus: int = 8, include_dashboard: bool = True,
               metrics_port: int | None = None, extra_env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    if len(temp_dir) > MAX_TEMP_DIR:
        raise ValueError(f"--temp-dir {temp_dir!r} is longer than {MAX_TEMP_DIR} characters: Ray's Unix socket paths "
                         "under it would exceed 107 bytes (use e.g. /tmp/rayhead)")
    cmd = [ray_cli(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
           f"--include-dashboard={'true' if include_dashboard else 'false'}", f"--temp-dir={temp_dir}",
           f"--num-cpus={num_cpus}", "--disable-usage-stats",
           # fixed defaults (agent http 52365, ...) collide with any other head on the box: the job server then finds
           # no agent and refuses every submission ("No available agent to submit job")
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={metrics_port or free_port()}",
           f"--ray-client-server-port={free_port()}"]  # not the fixed 10001 either
    return subprocess.run(cmd, env={**head_env(), **(extra_env or {})}, check=True, capture_output=True, text=True,
                          timeout=timeout)


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:  # gone, or not ours to read
        return []


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may contain spaces


def session_pids(temp_dir: str) -> list[int]:
    """The head's processes (their command line names the temp dir) and all their descendants (Linux /proc)."""
    pids = _pids()
    parents = {p: _ppid(p) for p in pids}
    # this process and its ancestors may name the temp dir too (`bash -c "python -m deploy.head stop --temp-dir X"`)
    me, pid = set(), os.getpid()
    while pid:
        me.add(pid)
        pid = parents.get(pid) or _ppid(pid)
    # the temp dir as a whole path component: /tmp/rayhead must not match /tmp/rayhead2
    named = [re.compile(re.escape(temp_dir.rstrip("/")) + r"(/|$)")]
    # Ray's client server (`ray start --head` spawns it, then it is re-parented to init) names only the GCS address
    current = Path(temp_dir) / "ray_current_cluster"
    if current.is_file() and (gcs := current.read_text().strip()):
        named.append(re.compile("^--address=" + re.escape(gcs) + "$"))
    found = {p for p in pids if p not in me and any(n.search(arg) for n in named for arg in _cmdline(p))}
    grew = True
    while grew:
        children = {p for p, parent in parents.items() if parent in found and p not in found | me}
        found |= children
        grew = bool(children)
    return sorted(found)


def listening_sockets() -> list[tuple[str, int, int, str]]:
    """(ip, port, pid, process name) of every listening TCP socket on this machine that `ss -ltnp` can attribute."""
    out = []
    text = subprocess.run(["ss", "-Hltnp"], check=True, capture_output=True, text=True).stdout
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        ip, _, port = fields[3].rpartition(":")
        for name, pid in re.findall(r'\("([^"]*)",pid=(\d+)', " ".join(fields[5:])):
            out.append((ip.strip("[]"), int(port), int(pid), name))
    return out


def listeners(temp_dir: str) -> list[tuple[str, int, int, str]]:
    """Listening TCP sockets of the head's processes."""
    pids = set(session_pids(temp_dir))
    return [s for s in listening_sockets() if s[2] in pids]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_head(temp_dir: str, grace: float = 5.0) -> int:
    """SIGTERM the head's processes, SIGKILL what is left after `grace` seconds (gcs_server, raylet and the agents
    outlast SIGTERM for many seconds; `ray stop` waits 16 s, then kills too); returns how many were found.
    Repeated because a dying raylet may still spawn a worker."""
    total = 0
    for _ in range(3):
        pids = session_pids(temp_dir)
        if not pids:
            break
        total += len(pids)
        _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        _signal([p for p in pids if _alive(p)], signal.SIGKILL)
        time.sleep(0.5)
    return total


def _alive(pid: int) -> bool:
    """Running and not a zombie (a zombie's parent reaps it; it holds no sockets or memory)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "listeners"])
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--port", type=int, default=6380)
    parser.add_argument("--dashboard-port", type=int, default=8266)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1,
                        help="logical CPUs (scheduling units, may exceed the cores): at least what the job's config "
                        "reserves, which the job checks before it starts (configs/sudoku_tiny.yaml: 2.5 -> 3)")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus endpoint of the node's metrics")
    args = parser.parse_args(argv)
    if args.command == "start":
        start_head(args.temp_dir, port=args.port, dashboard_port=args.dashboard_port, num_cpus=args.num_cpus,
                   metrics_port=args.metrics_port)
        print(f"head on 127.0.0.1:{args.port}; dashboard and job server http://127.0.0.1:{args.dashboard_port}")
    elif args.command == "stop":
        print(f"stopped {stop_head(args.temp_dir)} processes of {args.temp_dir}")
    else:
        for ip, port, pid, name in sorted(listeners(args.temp_dir), key=lambda x: x[1]):
            print(f"{ip}:{port}\tpid {pid}\t{name}" + ("" if ip in LOOPBACK else "\tNOT LOOPBACK"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
