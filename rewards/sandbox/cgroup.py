"""Per-run cgroups: a memory limit (memory.max, or memory.limit_in_bytes on cgroup v1) and a process limit
(pids.max) for each sandboxed program, counting what RLIMIT_AS does not (tmpfs pages, page cache, kernel memory),
and the CPU seconds the run used (v2 cpu.stat; v1 cpuacct where it is a hierarchy of its own).

`CgroupParent.probe()` looks for a hierarchy this process may create children in, below its own cgroup:
cgroup v2 with the memory and pids controllers enabled for children (`cgroup.subtree_control`), else cgroup v1
memory and pids hierarchies (`/sys/fs/cgroup/{memory,pids}`). Where neither works (a container without a delegated,
writable cgroup), it returns the reason and the sandbox runs without them: then only the rlimits, the tmpfs size and
the seccomp filter bound a program (rewards/README.md lists what is unbounded then).

A run joins its cgroup before bubblewrap starts: the command is prefixed with `/bin/sh -c 'echo $$ > PROCS; exec
"$@"'`, so every process of the sandbox is born inside it.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rewards.sandbox.processes import alive

ROOT = Path("/sys/fs/cgroup")
JOIN_SCRIPT = 'for p in "$@"; do [ "$p" = -- ] && break; echo $$ > "$p" || exit 125; shift; done; shift; exec "$@"'


def _own_paths() -> dict[str, str]:
    """Controller ('' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            out[name] = path
    return out


@dataclass
class RunCgroup:
    """The cgroup directories of one run (one per hierarchy) and the command prefix that joins them."""

    dirs: list[Path]

    def prefix(self) -> list[str]:
        return ["/bin/sh", "-c", JOIN_SCRIPT, "sh", *[str(d / "cgroup.procs") for d in self.dirs], "--"]

    def oom_killed(self) -> bool:
        """True if the memory limit killed a process of this run."""
        for directory in self.dirs:
            for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                try:
                    fields = dict(line.split() for line in (directory / name).read_text().splitlines())
                except (OSError, ValueError):
                    continue
                if int(fields.get(key, 0)) > 0:
                    return True
        return False

    def live_pids(self) -> list[int]:
        """Processes still in the run's cgroups (zombies excluded)."""
        pids: set[int] = set()
        for directory in self.dirs:
            try:
                pids.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return [pid for pid in sorted(pids) if alive(pid)]

    def cpu_seconds(self) -> float | None:
        """CPU seconds (user + system) every process of the run used: cgroup v2 cpu.stat, or v1 cpuacct.usage."""
        for directory in self.dirs:
            try:
                if (directory / "cpuacct.usage").exists():
                    return int((directory / "cpuacct.usage").read_text()) / 1e9
                if (directory / "cpu.stat").exists():
                    fields = dict(line.split() for line in (directory / "cpu.stat").read_text().splitlines())
                    if "usage_usec" in fields:
                        return int(fields["usage_usec"]) / 1e6
            except (OSError, ValueError):
                continue
        return None

    def remove(self) -> None:
        """rmdir each directory (retrying briefly while the last processes finish exiting)."""
        for directory in self.dirs:
            for _ in range(200):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)


def _remove_stale_siblings(directory: Path) -> None:
    """rmdir the empty `<tag>-<pid>` parents (and their empty run-N children) of processes that no longer exist: a
    host killed mid-run (a reward worker killed by Ray) cannot remove its own, and they would pile up on a node."""
    tag = directory.name.rsplit("-", 1)[0]
    try:
        siblings = [p for p in directory.parent.iterdir() if p.name.startswith(tag + "-")]
    except OSError:
        return
    for sibling in siblings:
        pid = sibling.name.rsplit("-", 1)[1]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        try:
            for child in sibling.iterdir():
                if child.is_dir():
                    child.rmdir()  # fails (and is left) if it still holds a process
            sibling.rmdir()
        except OSError:
            continue


class CgroupParent:
    """A directory per hierarchy, below this process's cgroup, holding one child cgroup per run."""

    def __init__(self, version: int, parents: list[Path]) -> None:
        self.version, self.parents = version, parents
        self._counter = itertools.count()

    @classmethod
    def probe(cls, tag: str = "gdsd-sandbox") -> tuple[CgroupParent | None, str]:
        """(parent, description) where per-run cgroups work here, else (None, why not)."""
        try:
            own = _own_paths()
        except OSError as exc:
            return None, f"cannot read /proc/self/cgroup: {exc}"
        name = f"{tag}-{os.getpid()}"
        problems = []
        if "" in own and (ROOT / "cgroup.controllers").exists():  # pure v2
            base = ROOT / own[""].lstrip("/")
            try:
                enabled = (base / "cgroup.subtree_control").read_text().split()
                missing = [c for c in ("memory", "pids") if c not in enabled]
                if missing:
                    (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
                parent = cls(2, [base / name])
                parent._try()
                return parent, f"cgroup v2 at {base / name}"
            except OSError as exc:
                problems.append(f"cgroup v2 at {base}: {exc}")
        if "memory" in own and "pids" in own and (ROOT / "memory").is_dir() and (ROOT / "pids").is_dir():
            dirs = [ROOT / "memory" / own["memory"].lstrip("/") / name, ROOT / "pids" / own["pids"].lstrip("/") / name]
            # cpuacct (CPU seconds per run) where it is a hierarchy of its own: joining it does not move the run
            # into a CPU task group, so the kernel's per-session autogroup still gives each run one CPU share.
            accounting = []
            if "cpuacct" in own and (ROOT / "cpuacct").is_dir() and not (ROOT / "cpuacct").is_symlink() \
                    and (ROOT / "cpuacct" / "cpuacct.usage").exists():
                accounting = [ROOT / "cpuacct" / own["cpuacct"].lstrip("/") / name]
            for extra in ([accounting, []] if accounting else [[]]):
                try:
                    parent = cls(1, dirs + extra)
                    parent._try()
                    return parent, f"cgroup v1 at {', '.join(map(str, dirs + extra))}"
                except OSError as exc:
                    parent.remove()
                    problems.append(f"cgroup v1: {exc}")
        return None, "; ".join(problems) or "no writable cgroup v2 or v1 memory+pids hierarchy"

    def _try(self) -> None:
        for directory in self.parents:
            _remove_stale_siblings(directory)
            directory.mkdir(exist_ok=True)
        if self.version == 2:
            (self.parents[0] / "cgroup.subtree_control").write_text("+memory +pids")
        probe = self.create(64 << 20, 8)
        probe.remove()

    def create(self, memory_bytes: int, max_pids: int) -> RunCgroup:
        """A fresh cgroup with the limits set; raises OSError if the hierarchy refuses."""
        index = next(self._counter)
        dirs = [parent / f"run-{index}" for parent in self.parents]
        run = RunCgroup(dirs)
        try:
            for parent in self.parents:  # removed from outside (another host's stale-directory sweep)? make it again
                if not parent.is_dir():
                    parent.mkdir(exist_ok=True)
                    if self.version == 2:
                        (parent / "cgroup.subtree_control").write_text("+memory +pids")
            for directory in dirs:
                directory.mkdir()
            if self.version == 2:
                (dirs[0] / "memory.max").write_text(str(memory_bytes))
                if (dirs[0] / "memory.swap.max").exists():  # no swapping around the limit
                    (dirs[0] / "memory.swap.max").write_text("0")
                (dirs[0] / "pids.max").write_text(str(max_pids))
            else:
                (dirs[0] / "memory.limit_in_bytes").write_text(str(memory_bytes))
                memsw = dirs[0] / "memory.memsw.limit_in_bytes"
                if memsw.exists():  # swap accounting on: memory + swap gets the same cap
                    try:
                        memsw.write_text(str(memory_bytes))
                    except OSError:
                        pass
                (dirs[1] / "pids.max").write_text(str(max_pids))
        except OSError:
            run.remove()
            raise
        return run

    def remove(self) -> None:
        for directory in self.parents:
            try:
                directory.rmdir()
            except OSError:
                pass
