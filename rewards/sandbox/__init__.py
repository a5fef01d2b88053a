"""The sandbox for generated code: `Sandbox.run(program, tests)` runs a program and its tests isolated (bubblewrap
namespaces, seccomp, rlimits, per-run cgroups) and returns which tests passed.

  box.py        Sandbox, SandboxConfig, SandboxUnavailable, RunResult: one run, end to end
  checkers.py   the long-lived checker processes (one per concurrent run) and their pool
  relay.py      the host's side of a run: feeding the program, deadlines, output caps, the verdict
  processes.py  bwrap arguments, uid sweeps, process-group kills (host helpers)
  cgroup.py     per-run cgroups (memory, pids, CPU accounting)
  seccomp.py    the syscall filter
  inside/       what runs INSIDE the sandbox, sent as source (`python3 -I -S -B -c`), never imported by the host
"""
from rewards.sandbox.box import RunResult, Sandbox, SandboxConfig, SandboxUnavailable

__all__ = ["RunResult", "Sandbox", "SandboxConfig", "SandboxUnavailable"]
