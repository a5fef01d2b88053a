"""A seccomp filter for the sandbox: no memory outside the rlimits, no new namespaces, no kernel attack surface.

RLIMIT_AS counts mapped memory only. Memory a program could hold without mapping it: memfd files, SysV shared memory
and message queues (a fresh IPC namespace's limits are effectively unlimited), POSIX message queues, and a tmpfs
mounted in a new user + mount namespace. The filter makes the syscalls that create them fail with EPERM:
memfd_create, memfd_secret, shmget, msgget, mq_open, unshare, setns, mount and the new mount API, and clone with
any CLONE_NEW* flag. clone3 fails with ENOSYS (its flags live in memory a filter cannot read; libc then falls back
to clone, whose flags it can). Also denied: ptrace, bpf, userfaultfd, io_uring, perf_event_open, the key syscalls,
and the other ways into a process of the same uid (process_vm_readv/writev, pidfd_getfd, kcmp): a checker's test
child must not reach the checker (which is also non-dumpable, so /proc/<pid>/mem is closed to it).
setsid and setpgid fail too: bwrap starts each run in a session of its own (`--new-session`, before the filter
is loaded), which with the kernel's autogroup scheduling is one CPU share per run however many processes it forks;
a process that started a session of its own would get a share of its own (15 such children starved honest runs).
socket and socketpair work only for AF_UNIX (EAFNOSUPPORT otherwise): the empty network namespace covers IP but
not every family (AF_VSOCK reaches the VM host's transport); Python's own startup opens no socket.
An unknown architecture (or the x32 ABI) is killed outright.

bubblewrap loads the filter (`--seccomp FD`) just before it executes the sandboxed command, so it holds for
prlimit, setpriv and the interpreter. The program is a classic BPF array of `struct sock_filter`.
"""
from __future__ import annotations

import errno
import platform
import struct

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
DENIED = ("memfd_create", "memfd_secret", "shmget", "msgget", "mq_open", "unshare", "setns", "mount", "umount2",
          "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "ptrace", "bpf",
          "userfaultfd", "io_uring_setup", "perf_event_open", "keyctl", "add_key", "request_key", "process_vm_readv",
          "process_vm_writev", "pidfd_getfd", "kcmp", "setsid", "setpgid")
SYSCALLS = {
    "x86_64": {"memfd_create": 319, "memfd_secret": 447, "shmget": 29, "msgget": 68, "mq_open": 240, "unshare": 272,
               "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "open_tree": 428, "move_mount": 429,
               "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "ptrace": 101, "bpf": 321,
               "userfaultfd": 323, "io_uring_setup": 425, "perf_event_open": 298, "keyctl": 250, "add_key": 248,
               "request_key": 249, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438,
               "kcmp": 312, "setsid": 112, "setpgid": 109, "clone": 56, "clone3": 435, "socket": 41, "socketpair": 53},
    "aarch64": {"memfd_create": 279, "memfd_secret": 447, "shmget": 194, "msgget": 186, "mq_open": 180,
                "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "open_tree": 428,
                "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "ptrace": 117,
                "bpf": 280, "userfaultfd": 282, "io_uring_setup": 425, "perf_event_open": 241, "keyctl": 219,
                "add_key": 217, "request_key": 218, "process_vm_readv": 270, "process_vm_writev": 271,
                "pidfd_getfd": 438, "kcmp": 272, "setsid": 157, "setpgid": 154, "clone": 220, "clone3": 435,
                "socket": 198, "socketpair": 199},
}
CLONE_NEW_FLAGS = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
AF_UNIX = 1
X32_SYSCALL_BIT = 0x40000000

_LD_ABS_W, _JEQ, _JSET, _JGE, _RET = 0x20, 0x15, 0x45, 0x35, 0x06
_ALLOW, _KILL_PROCESS = 0x7FFF0000, 0x80000000
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (arg0's low 32 bits: little-endian only)


def _errno(code: int) -> int:
    return 0x00050000 | code


class SeccompUnsupported(RuntimeError):
    """No syscall table for this machine's architecture."""


def seccomp_program(machine: str | None = None) -> bytes:
    """The filter for `machine` (default: this one) as bytes for bwrap's --seccomp."""
    machine = machine or platform.machine()
    if machine not in SYSCALLS:
        raise SeccompUnsupported(f"no seccomp syscall table for architecture {machine!r} (have {sorted(SYSCALLS)})")
    table = SYSCALLS[machine]
    # (code, jt, jf, k) with jt/jf as label names resolved below ("next" = fall through); ("label", name) entries
    # mark where a label points and emit nothing.
    prog: list[tuple] = [
        (_LD_ABS_W, 0, 0, _ARCH), (_JEQ, "next", "kill", AUDIT_ARCH[machine]),
        (_LD_ABS_W, 0, 0, _NR),
    ]
    if machine == "x86_64":
        prog.append((_JGE, "kill", "next", X32_SYSCALL_BIT))
    for name in DENIED:
        prog.append((_JEQ, "eperm", "next", table[name]))
    prog += [(_JEQ, "enosys", "next", table["clone3"]), (_JEQ, "clone", "next", table["clone"]),
             (_JEQ, "socket", "next", table["socket"]), (_JEQ, "socket", "next", table["socketpair"]),
             (_RET, 0, 0, _ALLOW),
             ("label", "clone"), (_LD_ABS_W, 0, 0, _ARG0), (_JSET, "eperm", "allow", CLONE_NEW_FLAGS),
             # socket / socketpair: only AF_UNIX (the network namespace does not cover e.g. AF_VSOCK)
             ("label", "socket"), (_LD_ABS_W, 0, 0, _ARG0), (_JEQ, "allow", "eafnosupport", AF_UNIX),
             ("label", "allow"), (_RET, 0, 0, _ALLOW), ("label", "eperm"), (_RET, 0, 0, _errno(errno.EPERM)),
             ("label", "enosys"), (_RET, 0, 0, _errno(errno.ENOSYS)),
             ("label", "eafnosupport"), (_RET, 0, 0, _errno(errno.EAFNOSUPPORT)),
             ("label", "kill"), (_RET, 0, 0, _KILL_PROCESS)]
    labels: dict[str, int] = {}
    instructions: list[tuple] = []
    for entry in prog:
        if entry[0] == "label":
            labels[entry[1]] = len(instructions)
        else:
            instructions.append(entry)
    out = bytearray()
    for index, (code, jt, jf, k) in enumerate(instructions):
        def offset(target: object) -> int:
            if target == "next" or target == 0:
                return 0
            jump = labels[target] - index - 1  # type: ignore[index]
            assert 0 <= jump < 256, "BPF conditional jumps are 8-bit"
            return jump
        out += struct.pack("<HBBI", code, offset(jt), offset(jf), k)
    return bytes(out)
