"""A sandbox for untrusted generated code: bubblewrap + prlimit + an unprivileged uid + wall-clock kill.

Each program runs in a fresh process tree (`_harness.py` under `/usr/bin/python3`):
- bubblewrap (`bwrap`): a new root holding only /usr read-only (plus /proc, a minimal /dev and a private size-capped
  tmpfs /tmp), the root remounted read-only, new pid/ipc/uts/net/cgroup namespaces (the new net namespace has only a
  down loopback, so no connection leaves it), a cleared environment, `--die-with-parent`, `--new-session`.
- `prlimit`: address space, CPU seconds, file size, open files, processes (counted per uid), no core files.
- `setpriv`: drop to a fresh unprivileged uid/gid per run, no supplementary groups, no capabilities, no_new_privs.
  Root ignores RLIMIT_NPROC, so without this a fork bomb would not be contained; a fresh uid per run means concurrent
  runs do not share a process budget.
- the host kills the whole process group on the wall-clock deadline or when output passes `max_output_bytes`; the
  sandbox's pid namespace dies with it, so no process survives a run.
- a test counts as passed only from a report line that carries a per-run random token (see `_harness.py`).

Threat model: the program cannot reach the host's files, network, or other processes, and cannot exhaust the
machine. It runs in the same interpreter as the harness, so a program that digs the token out of the interpreter's
memory (frame or gc introspection) could forge a pass; no exit-code trick, exception, or printed marker can.

Where bwrap is missing or cannot start, `Sandbox.run` raises `SandboxUnavailable` unless the config sets
`allow_rlimit_only=True`; that weaker mode (prlimit + setpriv + a temp working dir, no namespaces: the program can read
world-readable files and use the network) is logged as a warning on first use.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rewards._communicate import communicate

log = logging.getLogger(__name__)
HARNESS_SOURCE = (Path(__file__).with_name("_harness.py")).read_text()


OUTCOMES = ("finished", "timeout", "output_cap", "crashed", "refused")


class SandboxUnavailable(RuntimeError):
    """Raised instead of running code when the configured isolation is not available on this machine."""


class SandboxConfig(BaseModel):
    """Limits of one sandboxed run. The defaults fit a HumanEval-style program and its tests."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    bwrap: str = Field(default="bwrap", description="the bubblewrap executable (name on PATH or absolute path)")
    python: str = Field(default="/usr/bin/python3", description="interpreter inside the sandbox (must be under /usr)")
    allow_rlimit_only: bool = Field(default=False, description="run without bwrap (weaker: no namespaces) if missing")
    memory_mb: int = Field(default=512, description="RLIMIT_AS of the program")
    max_processes: int = Field(default=16, description="RLIMIT_NPROC for the run's uid (threads count too)")
    max_open_files: int = 64
    max_file_mb: int = Field(default=16, description="RLIMIT_FSIZE: largest file the program may write")
    tmpfs_mb: int = Field(default=64, description="size of the private /tmp")
    max_output_bytes: int = Field(default=1 << 16, description="stdout+stderr kept; past this the run is killed")
    startup_s: float = Field(default=3.0, description="wall-clock allowance for interpreter startup")
    max_wall_s: float = Field(default=60.0, description="wall-clock cap of one run, whatever the number of tests")
    max_program_bytes: int = Field(default=1 << 18, description="longer programs are refused (scored 0)")
    uid_base: int = Field(default=200_000, description="per-run uids are drawn from [uid_base, uid_base+uid_span)")
    uid_span: int = 100_000


@dataclass
class RunResult:
    """What one sandboxed run of a program and its tests produced."""

    passed: list[bool]
    program_ok: bool = False
    finished: bool = False  # the harness reached its end (reported "done")
    timed_out: bool = False
    output_capped: bool = False
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    mode: str = "bwrap"
    error: str | None = None

    @property
    def outcome(self) -> str:
        """One of OUTCOMES: how the run ended (the program's doing, not a sandbox failure)."""
        if self.timed_out:
            return "timeout"
        if self.output_capped:
            return "output_cap"
        return "finished" if self.finished else "crashed"

    @property
    def fraction_passed(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


_probe_lock = threading.Lock()
_probe_result: dict[str, str | None] = {}


def bwrap_problem(bwrap: str = "bwrap") -> str | None:
    """None if bubblewrap is installed and can start a sandbox here, else why not (probed once per process)."""
    with _probe_lock:
        if bwrap not in _probe_result:
            if shutil.which(bwrap) is None:
                _probe_result[bwrap] = f"{bwrap!r} not found (Debian package 'bubblewrap')"
            else:
                probe = subprocess.run([*_bwrap_args(bwrap, 64 << 20), "--", "/usr/bin/true"], capture_output=True,
                                       timeout=30, stdin=subprocess.DEVNULL)
                _probe_result[bwrap] = (None if probe.returncode == 0 else
                                        f"bwrap cannot start a sandbox here: {probe.stderr.decode(errors='replace')}")
        return _probe_result[bwrap]


def _bwrap_args(bwrap: str, tmpfs_bytes: int) -> list[str]:
    args = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    # Merged-/usr systems have /bin -> usr/bin etc.; elsewhere bind the real directories read-only.
    for top in ("bin", "sbin", "lib", "lib32", "lib64"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{top}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{top}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp",
             "--chdir", "/tmp", "--remount-ro", "/", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
             "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8"]
    if os.geteuid() != 0:  # unprivileged bwrap needs a user namespace; we are already a non-root uid
        args.insert(1, "--unshare-user")
    return args


class Sandbox:
    """Runs `program` then each of `tests` (Python source) in a fresh sandbox and reports which tests passed."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._warned_weak = False
        self._records_lock = threading.Lock()
        self._records: list[tuple[float, str]] = []

    def mode(self) -> str:
        """'bwrap', or 'rlimit' where bwrap is unusable and the config allows it; raises SandboxUnavailable else."""
        problem = bwrap_problem(self.config.bwrap)
        if problem is None:
            return "bwrap"
        if not self.config.allow_rlimit_only:
            raise SandboxUnavailable(f"refusing to run generated code: {problem}; install bubblewrap (make setup) "
                                     "or set sandbox.allow_rlimit_only=true to accept a weaker rlimit-only sandbox")
        if not self._warned_weak:
            log.warning("sandbox: %s; running generated code in the WEAKER rlimit-only mode (no namespaces: the "
                        "program can read world-readable files and use the network)", problem)
            self._warned_weak = True
        return "rlimit"

    def drain_records(self) -> list[tuple[float, str]]:
        """(seconds, outcome) of every run since the last call, outcome in OUTCOMES (for the metrics)."""
        with self._records_lock:
            out, self._records = self._records, []
        return out

    def run(self, program: str, tests: list[str], test_timeout_s: float = 1.0) -> RunResult:
        """Run `program`, then each test in the same namespace with `test_timeout_s` each; never raises for
        anything the program does. Raises SandboxUnavailable when it refuses to run code at all."""
        cfg = self.config
        mode = self.mode()
        if len(program.encode("utf-8", "surrogatepass")) > cfg.max_program_bytes:
            with self._records_lock:
                self._records.append((0.0, "refused"))
            return RunResult(passed=[False] * len(tests), mode=mode,
                             error=f"program longer than max_program_bytes={cfg.max_program_bytes}")
        token = secrets.token_hex(16)
        payload = json_payload(token, program, tests, test_timeout_s)
        wall_s = min(cfg.max_wall_s, cfg.startup_s + test_timeout_s * (len(tests) + 1))
        uid = cfg.uid_base + secrets.randbelow(cfg.uid_span) if os.geteuid() == 0 else None
        report_r, report_w = os.pipe()
        info_r, info_w = os.pipe()  # bwrap writes {"child-pid": N} here: the sandbox's init as seen from outside
        workdir = tempfile.mkdtemp(prefix="gdsd-sandbox-") if mode == "rlimit" else None
        if workdir is not None:
            os.chmod(workdir, 0o1777)  # the program runs as another uid and writes its files here
        start = time.monotonic()
        try:
            proc = subprocess.Popen(self._command(mode, wall_s, report_w, info_w, uid), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(report_w, info_w),
                                    start_new_session=True, cwd=workdir,
                                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir or "/tmp"})
            os.close(report_w)
            os.close(info_w)
            report_w = info_w = -1
            out = communicate(proc, payload, report_r, deadline=start + wall_s, max_output=cfg.max_output_bytes)
            self._reap(mode, info_r, uid)
        finally:
            for fd in (report_w, info_w, report_r, info_r):
                if fd >= 0:
                    os.close(fd)
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.monotonic() - start
        result = parse_report(out.report, token, len(tests))
        result.timed_out, result.output_capped, result.returncode = out.timed_out, out.capped, out.returncode
        result.stdout, result.stderr = out.stdout.decode(errors="replace"), out.stderr.decode(errors="replace")
        result.seconds, result.mode = seconds, mode
        if out.timed_out:
            result.error = f"wall-clock timeout after {wall_s:.1f}s"
        elif out.capped:
            result.error = f"output over {cfg.max_output_bytes} bytes"
        elif not result.finished:
            result.error = f"harness did not finish (exit code {out.returncode})"
        with self._records_lock:
            self._records.append((seconds, result.outcome))
        return result

    def _command(self, mode: str, wall_s: float, report_fd: int, info_fd: int, uid: int | None) -> list[str]:
        cfg = self.config
        limits = ["prlimit", f"--as={cfg.memory_mb << 20}", f"--cpu={int(wall_s) + 1}",
                  f"--fsize={cfg.max_file_mb << 20}", f"--nofile={cfg.max_open_files}",
                  f"--nproc={cfg.max_processes}", "--core=0", "--"]
        drop: list[str] = []
        if uid is not None:
            drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
                    "--inh-caps=-all", "--bounding-set=-all", "--"]
        python = [cfg.python, "-I", "-S", "-B", "-c", HARNESS_SOURCE, str(report_fd)]
        # prlimit runs first (as root it may set hard limits), then setpriv drops the uid, then the interpreter.
        inner = limits + drop + python
        if mode == "bwrap":
            return [*_bwrap_args(cfg.bwrap, cfg.tmpfs_mb << 20), "--info-fd", str(info_fd), "--", *inner]
        return inner

    @staticmethod
    def _reap(mode: str, info_r: int, uid: int | None) -> None:
        """Return only once no process of the run is left.

        bwrap: the outer bwrap has exited (or was killed with its group); the sandbox's init then gets SIGKILL via
        --die-with-parent, and the kernel kills the whole pid namespace before init finishes exiting, so waiting for
        init to go is waiting for the namespace. rlimit-only: a program may have left our process group (setsid), so
        kill everything its per-run uid owns (from here: a helper running as that uid could not even start while a
        fork bomb holds the uid at its process limit)."""
        if mode == "bwrap":
            os.set_blocking(info_r, False)
            try:
                info = json.loads(os.read(info_r, 4096) or b"{}")
            except (BlockingIOError, ValueError):
                info = {}
            pid = info.get("child-pid")
            deadline = time.monotonic() + 5.0
            while isinstance(pid, int) and time.monotonic() < deadline and _alive(pid):
                time.sleep(0.005)
        elif uid is not None:
            _kill_uid(uid)


def _uid_pids(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status", "rb") as f:
                    real_uid = next(line for line in f if line.startswith(b"Uid:")).split()[1]
            except (OSError, StopIteration):
                continue
            if int(real_uid) == uid:
                pids.append(int(entry.name))
    return pids


def _kill_uid(uid: int, timeout_s: float = 5.0) -> None:
    """SIGKILL every process of `uid` until none is left (rounds: survivors of one round may have forked)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [pid for pid in _uid_pids(uid) if _alive(pid)]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def json_payload(token: str, program: str, tests: list[str], timeout: float) -> bytes:
    # ensure_ascii (the default) escapes every non-ASCII character, lone surrogates included, so this cannot fail.
    return json.dumps({"token": token, "program": program, "tests": list(tests), "timeout": timeout}).encode("ascii")


def parse_report(report: bytes, token: str, num_tests: int) -> RunResult:
    """Read the harness's report lines; only lines that start with this run's token count."""
    passed = [False] * num_tests
    result = RunResult(passed=passed)
    prefix = token.encode() + b" "
    for line in report.split(b"\n"):
        if not line.startswith(prefix):
            continue
        fields = line[len(prefix):].decode("ascii", errors="replace").split()
        if fields == ["done"]:
            result.finished = True
        elif len(fields) == 2 and fields[0] == "program":
            result.program_ok = fields[1] == "1"
        elif len(fields) == 3 and fields[0] == "test" and fields[1].isdigit() and int(fields[1]) < num_tests:
            passed[int(fields[1])] = fields[2] == "1"
    return result
