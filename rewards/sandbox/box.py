"""A sandbox for untrusted generated code whose verdicts are decided outside the program's process.

Two processes per run, neither able to touch the other:
- the program's process (`inside/program.py`): a fresh process tree per run. bubblewrap (new pid/ipc/uts/net/cgroup
  namespaces, a root holding only /usr read-only plus /proc, a minimal /dev and a size-capped private /tmp, cleared
  environment, `--die-with-parent`, `--new-session`, the seccomp filter of `rewards/sandbox/seccomp.py`) -> `prlimit`
  (address space, CPU seconds, file size, open files, processes, no core) -> `setpriv` (a fresh unprivileged uid per
  run, no groups, no capabilities, no_new_privs) -> `/usr/bin/python3 -I -S -B`, inside a per-run cgroup
  (`rewards/sandbox/cgroup.py`: memory.max, pids.max) where the host allows one. It runs the program and then only
  answers "what is name X" and "call function X with these arguments" with plain data (`inside/plain.py`).
- the checker (`inside/checker.py`): a long-lived process in its own sandbox and uid, one per concurrent run, which runs
  the tests, each in a forked child that can only report its own verdict, and decides every verdict from fresh builtin
  values. It never receives program code. Checkers are started and killed by `checkers.py` (a killed checker
  takes its whole pid namespace; leftovers are counted as orphans).
The checker receives the two pipes of the program's process for each run and talks to it directly; the host
(`relay.py`) feeds the program, kills the program's process group at the wall-clock deadline
(`startup_s + timeout x (tests + 1)`, capped at `max_wall_s`) or when its output passes `max_output_bytes`, and
returns only after the program's pid namespace is gone. Nothing the program prints, writes or does after the fact can
change a verdict: the verdict lines come from the checker's control socket, which the program cannot reach.

Where bwrap is missing or cannot start, `check_ready` / `run` raise `SandboxUnavailable` unless the config sets
`allow_rlimit_only=True`: that weaker mode (prlimit + setpriv + a temp working dir: no namespaces, no seccomp filter)
is logged as a warning on first use.
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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rewards.sandbox.cgroup import CgroupParent, RunCgroup
from rewards.sandbox.checkers import CheckerPool, CheckerStartError, in_sandbox_source
from rewards.sandbox.processes import (alive, bwrap_args, bwrap_problem, filter_fd, kill_group, kill_uid, uid_pids,
                                       wait_for_namespace)
from rewards.sandbox.relay import Outcome, relay
from rewards.sandbox.seccomp import SeccompUnsupported, seccomp_program

log = logging.getLogger(__name__)
OUTCOMES = ("finished", "timeout", "output_cap", "crashed", "refused")


class SandboxUnavailable(RuntimeError):
    """Raised instead of running code when the configured isolation is not available on this machine."""


class SandboxConfig(BaseModel):
    """Limits of one sandboxed run. The defaults fit a HumanEval-style program and its tests."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    bwrap: str = Field(default="bwrap", description="the bubblewrap executable (name on PATH or absolute path)")
    python: str = Field(default="/usr/bin/python3", description="interpreter inside the sandbox (must be under /usr)")
    allow_rlimit_only: bool = Field(default=False, description="run without bwrap (weaker: no namespaces) if missing")
    memory_mb: int = Field(default=512, description="RLIMIT_AS of the program (and of the checker)")
    max_processes: int = Field(default=16, description="RLIMIT_NPROC for the run's uid (threads count too)")
    max_open_files: int = 64
    max_file_mb: int = Field(default=16, description="RLIMIT_FSIZE: largest file the program may write")
    tmpfs_mb: int = Field(default=64, description="size of the private /tmp")
    max_output_bytes: int = Field(default=1 << 16, description="stdout+stderr kept; past this the run is killed")
    max_value_bytes: int = Field(default=1 << 20, description="largest reply line (one value) from the program")
    startup_s: float = Field(default=3.0, description="wall-clock allowance for interpreter startup")
    max_wall_s: float = Field(default=60.0, description="wall-clock cap of one run, whatever the number of tests")
    max_program_bytes: int = Field(default=1 << 18, description="longer programs are refused (scored 0)")
    uid_base: int = Field(default=200_000, description="per-run uids are drawn from [uid_base, uid_base+uid_span); "
                          "checkers use uid_base+uid_span+k")
    uid_span: int = 100_000
    seccomp: bool = Field(default=True, description="load rewards/sandbox/seccomp.py's filter (no memfd, SysV shm, new "
                          "namespaces); off only for debugging")
    cgroup: Literal["auto", "required", "off"] = Field(
        default="auto", description="per-run cgroup memory.max + pids.max: auto = where the host allows (logged at "
        "start otherwise), required = SandboxUnavailable without, off = never")
    cgroup_memory_mb: int | None = Field(default=None, description="memory.max of a run; None: memory_mb + tmpfs_mb")


@dataclass
class RunResult:
    """What one sandboxed run of a program and its tests produced."""

    passed: list[bool]
    program_ok: bool = False
    finished: bool = False  # the checker reported every test
    timed_out: bool = False
    output_capped: bool = False
    oom_killed: bool = False
    cpu_seconds: float | None = None  # CPU (user + system) of all the run's processes, where a per-run cgroup counts it
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


class Sandbox:
    """Runs `program`, then `tests` (Python source) against it, and reports which tests passed."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._lock = threading.Lock()
        self._ready: dict | None = None
        self._problem: str | None = None
        self._cgroups: CgroupParent | None = None
        self._filter: bytes | None = None
        self._records: list[tuple[float, str]] = []
        self._checkers: CheckerPool | None = None
        self._run_orphans = 0
        self._cpu_seconds: list[float] = []

    def check_ready(self) -> dict[str, str]:
        """Probe once what this machine allows and return it ({"mode", "seccomp", "cgroup"}); raises
        SandboxUnavailable when the configured isolation cannot run. Call it before training starts."""
        with self._lock:
            if self._ready is None:
                self._ready = self._probe()
            return self._ready

    def _probe(self) -> dict[str, str]:
        cfg = self.config
        ready = {"mode": "bwrap", "seccomp": "off", "cgroup": "off"}
        if cfg.seccomp:
            try:
                self._filter = seccomp_program()
                ready["seccomp"] = "on"
            except SeccompUnsupported as exc:
                raise SandboxUnavailable(f"{exc}; set sandbox.seccomp=false to run without the filter") from exc
        problem = bwrap_problem(cfg.bwrap, self._filter)
        if problem is not None:
            if not cfg.allow_rlimit_only:
                raise SandboxUnavailable(f"refusing to run generated code: {problem}; install bubblewrap (make "
                                         "setup) or set sandbox.allow_rlimit_only=true to accept a weaker rlimit-only "
                                         "sandbox")
            log.warning("sandbox: %s; running generated code in the WEAKER rlimit-only mode (no namespaces, no "
                        "seccomp filter: the program can read world-readable files and use the network)", problem)
            ready.update(mode="rlimit", seccomp="off")
            self._filter = None
        if cfg.cgroup != "off":
            self._cgroups, where = CgroupParent.probe()
            if self._cgroups is None:
                if cfg.cgroup == "required":
                    raise SandboxUnavailable(f"sandbox.cgroup=required but no per-run cgroup is possible: {where}")
                log.warning("sandbox: no per-run cgroup (%s): memory outside RLIMIT_AS (the /tmp tmpfs of each run, "
                            "page cache, kernel memory) is bounded only per run by tmpfs_mb, and processes only by "
                            "RLIMIT_NPROC; see rewards/README.md", where)
                ready["cgroup"] = f"unavailable: {where}"
            else:
                ready["cgroup"] = where
        self._checkers = CheckerPool(self._checker_command, startup_s=max(cfg.startup_s, 10.0),
                                     uids=self._checker_uid)
        ready["orphans"] = str(self._lifecycle_probe())
        return ready

    def _lifecycle_probe(self) -> int:
        """Start a checker and kill it the way a timed-out run does: the processes left behind (orphans) must be 0,
        else the sandbox would leak a process per timeout and eventually fail every row."""
        assert self._checkers is not None
        try:
            checker = self._checkers.acquire()
        except CheckerStartError as exc:
            raise SandboxUnavailable(f"the test checker cannot start: {exc}") from exc
        orphans = checker.kill()
        if orphans:
            raise SandboxUnavailable(f"{orphans} process(es) of a killed checker outlived it; the sandbox cannot "
                                     "clean up after a timeout here")
        return orphans

    def drain_records(self) -> list[tuple[float, str]]:
        """(seconds, outcome) of every run since the last call, outcome in OUTCOMES (for the metrics)."""
        with self._lock:
            out, self._records = self._records, []
        return out

    def drain_orphans(self) -> int:
        """Processes of runs or checkers found alive after their namespace was gone, since the last call (each
        was killed then; there must be none: `sandbox/orphans`)."""
        with self._lock:
            out, self._run_orphans = self._run_orphans, 0
            if self._checkers is not None:
                out += self._checkers.take_orphans()
        return out

    def drain_cpu_seconds(self) -> list[float]:
        """CPU seconds of each run since the last call, where a per-run cgroup counted them."""
        with self._lock:
            out, self._cpu_seconds = self._cpu_seconds, []
        return out

    def _count_orphans(self, count: int) -> None:
        with self._lock:
            self._run_orphans += count

    def _record(self, seconds: float, outcome: str) -> None:
        with self._lock:
            self._records.append((seconds, outcome))

    def run(self, program: str, tests: list[str], test_timeout_s: float = 1.0, *,
            entry_point: str | None = None, helpers: str | None = None) -> RunResult:
        """Run `program`, then each test against it with `test_timeout_s` each; never raises for anything the
        program does. `entry_point`: a program name the tests may use even if it shadows a builtin. `helpers`:
        trusted source (the prompt's helper functions) run in each test's namespace before the test, so the tests
        use these and not the program's versions of them.
        Raises SandboxUnavailable when it refuses to run code at all."""
        cfg = self.config
        mode = self.check_ready()["mode"]
        if len(program.encode("utf-8", "surrogatepass")) > cfg.max_program_bytes:
            self._record(0.0, "refused")
            return RunResult(passed=[False] * len(tests), mode=mode,
                             error=f"program longer than max_program_bytes={cfg.max_program_bytes}")
        wall_s = min(cfg.max_wall_s, cfg.startup_s + test_timeout_s * (len(tests) + 1))
        assert self._checkers is not None
        try:
            checker = self._checkers.acquire()
        except CheckerStartError as exc:
            raise SandboxUnavailable(f"the test checker cannot start: {exc}") from exc
        start = time.monotonic()  # after the checker: its one-time startup is not the program's time
        uid = cfg.uid_base + secrets.randbelow(cfg.uid_span) if os.geteuid() == 0 else None
        request_r, request_w = os.pipe()  # checker -> program
        reply_r, reply_w = os.pipe()  # program -> checker
        info_r, info_w = os.pipe()  # bwrap writes {"child-pid": N} here: the sandbox's init as seen from outside
        filter_r = filter_fd(self._filter) if mode == "bwrap" and self._filter is not None else -1
        ours = [request_r, request_w, reply_r, reply_w, info_r, info_w, filter_r]
        workdir = tempfile.mkdtemp(prefix="gdsd-sandbox-") if mode == "rlimit" else None
        if workdir is not None:
            os.chmod(workdir, 0o1777)  # the program runs as another uid and writes its files here
        cgroup: RunCgroup | None = None
        checker_ok = False

        def close(*fds: int) -> None:
            for fd in fds:
                if fd >= 0 and fd in ours:
                    os.close(fd)
                    ours.remove(fd)

        try:
            cgroup = self._run_cgroup()
            command = self._program_command(mode, wall_s, (request_r, reply_w), info_w, filter_r, uid)
            proc = subprocess.Popen((cgroup.prefix() if cgroup else []) + command, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=tuple(fd for fd in (request_r, reply_w, info_w, filter_r) if fd >= 0),
                                    start_new_session=True, cwd=workdir,
                                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir or "/tmp"})
            close(request_r, reply_w, info_w, filter_r)
            try:
                checker.start_run(request_w, reply_r, plain_line({
                    "tests": list(tests), "timeout": test_timeout_s, "ready_timeout": cfg.startup_s + test_timeout_s,
                    "force": [entry_point] if entry_point else [], "helpers": helpers or "",
                    "max_line": cfg.max_value_bytes}))
                started = True
            except OSError:  # the checker died while idle: this run fails, the slot gets a fresh one
                started = False
            close(request_w, reply_r)  # the checker holds its own copies now
            if started:
                out = relay(proc, checker.sock, program=plain_line({"program": program, "timeout": test_timeout_s}),
                            deadline=start + wall_s, max_output=cfg.max_output_bytes, tests=len(tests))
            else:
                kill_group(proc)
                out = Outcome(returncode=proc.wait(), checker_failed=True)
            checker_ok = out.finished and not out.checker_failed
            if mode == "bwrap":
                wait_for_namespace(info_r)
            if uid is not None:  # the namespace is gone: anything of this uid still alive is an orphan
                # (the run's cgroup lists its processes cheaply; without one, scan /proc for the uid)
                left = cgroup.live_pids() if cgroup is not None else [pid for pid in uid_pids(uid) if alive(pid)]
                if left:
                    kill_uid(uid)
                    if mode == "bwrap":
                        self._count_orphans(len(left))
        finally:
            self._checkers.release(checker, healthy=checker_ok)
            close(*list(ours))
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            oom_killed = cgroup is not None and cgroup.oom_killed()
            cpu_seconds = cgroup.cpu_seconds() if cgroup is not None else None
            if cgroup is not None:
                cgroup.remove()
        result = RunResult(passed=[out.program_ok and out.passed.get(i, False) for i in range(len(tests))],
                           program_ok=out.program_ok, finished=out.finished, timed_out=out.timed_out,
                           output_capped=out.capped, returncode=out.returncode,
                           stdout=out.stdout.decode(errors="replace"), stderr=out.stderr.decode(errors="replace"),
                           seconds=time.monotonic() - start, mode=mode)
        result.oom_killed, result.cpu_seconds = oom_killed, cpu_seconds
        if out.timed_out:
            result.error = f"wall-clock timeout after {wall_s:.1f}s"
        elif out.capped:
            result.error = f"output over {cfg.max_output_bytes} bytes"
        elif out.checker_failed:
            result.error = "the checker failed (replaced); unreported tests count as failed"
        elif not out.program_ok:
            result.error = f"program did not run to its end (exit code {out.returncode})"
        self._record(result.seconds, result.outcome)
        if cpu_seconds is not None:
            with self._lock:
                self._cpu_seconds.append(cpu_seconds)
        return result

    def _run_cgroup(self) -> RunCgroup | None:
        if self._cgroups is None:
            return None
        cfg = self.config
        memory_mb = cfg.cgroup_memory_mb or cfg.memory_mb + cfg.tmpfs_mb
        try:
            return self._cgroups.create(memory_mb << 20, cfg.max_processes + 4)  # + bwrap, its init, sh, slack
        except OSError as exc:
            if cfg.cgroup == "required":
                raise SandboxUnavailable(f"cannot create a per-run cgroup: {exc}") from exc
            log.warning("sandbox: per-run cgroup failed (%s); this run has only its rlimits", exc)
            return None

    def _limits(self, cpu_s: int | None) -> list[str]:
        cfg = self.config
        limits = ["prlimit", f"--as={cfg.memory_mb << 20}", f"--fsize={cfg.max_file_mb << 20}",
                  f"--nofile={cfg.max_open_files}", f"--nproc={cfg.max_processes}", "--core=0", "--msgqueue=0"]
        if cpu_s is not None:
            limits.append(f"--cpu={cpu_s}")
        return [*limits, "--"]

    @staticmethod
    def _drop(uid: int | None) -> list[str]:
        if uid is None:
            return []
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all", "--"]

    def _program_command(self, mode: str, wall_s: float, pipes: tuple[int, int], info_fd: int, filter_fd_: int,
                         uid: int | None) -> list[str]:
        cfg = self.config
        # prlimit runs first (as root it may set hard limits), then setpriv drops the uid, then the interpreter.
        inner = [*self._limits(int(wall_s) + 1), *self._drop(uid), cfg.python, "-I", "-S", "-B", "-c",
                 in_sandbox_source("program.py"), str(pipes[0]), str(pipes[1])]
        if mode != "bwrap":
            return inner
        seccomp = ["--seccomp", str(filter_fd_)] if filter_fd_ >= 0 else []
        return [*bwrap_args(cfg.bwrap, cfg.tmpfs_mb << 20), *seccomp, "--info-fd", str(info_fd), "--", *inner]

    def _checker_uid(self) -> int | None:
        """A fresh uid for a checker start, drawn from [uid_base + uid_span, uid_base + 2 * uid_span) (root only)."""
        cfg = self.config
        return cfg.uid_base + cfg.uid_span + secrets.randbelow(cfg.uid_span) if os.geteuid() == 0 else None

    def _checker_command(self, uid: int | None, sock_fd: int, info_fd: int) -> tuple[list[str], int]:
        """(command, seccomp fd or -1) of a checker running as `uid` (no CPU rlimit: it lives across runs)."""
        cfg = self.config
        inner = [*self._limits(None), *self._drop(uid), cfg.python, "-I", "-S", "-B", "-c",
                 in_sandbox_source("checker.py"), str(sock_fd)]
        if self._ready is None or self._ready["mode"] != "bwrap":
            return [*inner, "0"], -1
        inner.append("1")  # alone in its pid namespace
        fd = filter_fd(self._filter) if self._filter is not None else -1
        seccomp = ["--seccomp", str(fd)] if fd >= 0 else []
        return [*bwrap_args(cfg.bwrap, cfg.tmpfs_mb << 20), *seccomp, "--info-fd", str(info_fd), "--", *inner], fd

    def close(self) -> None:
        """Stop the checker processes and remove this sandbox's cgroup directory."""
        if self._checkers is not None:
            self._checkers.close()
        if self._cgroups is not None:
            self._cgroups.remove()


def plain_line(message: dict) -> bytes:
    # ensure_ascii (the default) escapes every non-ASCII character, lone surrogates included, so this cannot fail.
    return json.dumps(message).encode("ascii") + b"\n"
