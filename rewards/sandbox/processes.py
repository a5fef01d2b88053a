"""Process-level pieces of the sandbox: the bubblewrap command line, the bwrap probe, and making sure no process of
a run outlives it (`kill_group`: the one place a child's process group is killed, also for the math-verify
children)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (it was started with start_new_session=True, so pgid == pid)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def bwrap_args(bwrap: str, tmpfs_bytes: int, *, die_with_parent: bool = True) -> list[str]:
    """bubblewrap with new pid/ipc/uts/net/cgroup namespaces and a root holding only /usr (read-only), /proc, a
    minimal /dev and a size-capped private /tmp. `die_with_parent` uses PR_SET_PDEATHSIG, which fires when the
    spawning *thread* exits: right for a run (spawned and awaited by one thread), wrong for a long-lived checker
    spawned from a short-lived thread (the checker ends on EOF of its control socket instead)."""
    args = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try",
            *(["--die-with-parent"] if die_with_parent else []), "--new-session", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr"]
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
        args[1:1] = ["--unshare-user", "--disable-userns"]
    return args


def bwrap_problem(bwrap: str, seccomp_fd_bytes: bytes | None) -> str | None:
    """None if bubblewrap (with the seccomp filter, when given) can start a sandbox here, else why not."""
    if shutil.which(bwrap) is None:
        return f"{bwrap!r} not found (Debian package 'bubblewrap')"
    args = bwrap_args(bwrap, 64 << 20)
    fds: tuple[int, ...] = ()
    if seccomp_fd_bytes is not None:
        read_fd = filter_fd(seccomp_fd_bytes)
        fds = (read_fd,)
        args += ["--seccomp", str(read_fd)]
    try:
        probe = subprocess.run([*args, "--", "/usr/bin/true"], capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL, pass_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    if probe.returncode != 0:
        return f"bwrap cannot start a sandbox here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def filter_fd(program: bytes) -> int:
    """A pipe's read end holding `program` (bwrap reads it to EOF); the caller closes it after the spawn."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, program)  # a few hundred bytes: far below the pipe buffer
    finally:
        os.close(write_fd)
    return read_fd


def wait_for_namespace(info_r: int, timeout_s: float = 5.0) -> None:
    """Return once the sandbox's init (its pid from bwrap's --info-fd) is gone: the kernel kills the whole pid
    namespace before init finishes exiting, so this is waiting for every process of the run."""
    os.set_blocking(info_r, False)
    try:
        info = json.loads(os.read(info_r, 4096) or b"{}")
    except (BlockingIOError, ValueError):
        info = {}
    pid = info.get("child-pid")
    deadline = time.monotonic() + timeout_s
    while isinstance(pid, int) and time.monotonic() < deadline and alive(pid):
        time.sleep(0.002)


def uid_pids(uid: int) -> list[int]:
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


def kill_uid(uid: int, timeout_s: float = 5.0) -> None:
    """SIGKILL every process of `uid` until none is left (rounds: survivors of one round may have forked)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [pid for pid in uid_pids(uid) if alive(pid)]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
