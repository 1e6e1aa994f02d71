"""The launcher: a small single-threaded process that forks every job.

It is started by the engine as a fresh interpreter (``python -I -S this_file FD``), so it is
single-threaded whatever the engine is doing: forking from it is safe, and the spawn plan is
applied in the child between ``fork`` and ``execve`` without ``preexec_fn``. It imports only
the standard library to start fast and stay small.

Protocol (JSON over a SOCK_SEQPACKET socket, one message per packet; pipe ends travel as
SCM_RIGHTS):

- engine -> launcher: ``spawn`` (with the job's stdout and stderr write ends), ``signal``,
  ``shutdown``.
- launcher -> engine: ``ready``, ``spawned``/``spawn_failed``, ``signalled``, ``exit``.

The launcher is the only process that reaps jobs, and it handles one message at a time, so a
``signal`` request is never delivered to a PID it has already reaped. It never waits on one
child: a forked child's setup (joining cgroups, making namespaces) runs while the launcher
serves the next request, and the spawn is answered when the child's error pipe says how
setup ended. The engine runs several launchers, so spawns proceed on every core; started
with ``restricted`` after the descriptor, a launcher starts only jobs that may hold no
capability and gain none, and has applied that to itself (see :func:`restricted_plan`).
When the engine's end of the socket closes (the engine died), it kills every job and exits:
nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gc
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any

MAX_MESSAGE = 4 << 20
CHILD_SETUP_TIMEOUT = 10.0

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = {
    "net": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
}

# clone3(2), Linux 5.3+ (CLONE_INTO_CGROUP 5.7+): one number on every architecture.
SYS_CLONE3, CLONE_PIDFD, CLONE_INTO_CGROUP = 435, 0x1000, 0x200000000
CGROUP2_FSTYPE = "cgroup2"

PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ, PR_CAPBSET_DROP = 23, 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
# mount_setattr(2), Linux 5.12+; new system calls have one number on every architecture.
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_SETPCAP = 8
#: Capability numbers go up to the kernel's cap_last_cap; PR_CAPBSET_DROP says EINVAL past it.
MAX_CAPABILITY = 63

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# clone3 through a handle that keeps the GIL held across the call: the child starts as an
# exact copy of this single-threaded interpreter in the middle of a call, as after os.fork.
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class _CloneArgs(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("pidfd", ctypes.c_uint64),
        ("child_tid", ctypes.c_uint64),
        ("parent_tid", ctypes.c_uint64),
        ("exit_signal", ctypes.c_uint64),
        ("stack", ctypes.c_uint64),
        ("stack_size", ctypes.c_uint64),
        ("tls", ctypes.c_uint64),
        ("set_tid", ctypes.c_uint64),
        ("set_tid_size", ctypes.c_uint64),
        ("cgroup", ctypes.c_uint64),
    ]


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def recv_with_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """One message and the descriptors sent with it, received close-on-exec.

    ``socket.recv_fds`` in Python 3.11 drops its ``flags`` argument, so a descriptor it
    receives would be inheritable until a later ``set_inheritable`` call: a window in which a
    concurrent spawn could leak it into a job.
    """
    data, ancdata, _, _ = sock.recvmsg(
        bufsize, socket.CMSG_LEN(maxfds * 4), socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
    return data, fds


class ChildSetupError(Exception):
    def __init__(self, stage: str, err: int, message: str) -> None:
        super().__init__(message)
        self.stage, self.err, self.message = stage, err, message


def _check(result: int, stage: str, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise ChildSetupError(stage, err, f"{what}: {os.strerror(err)}")


# ------------------------------------------------------------------------------------------
# in the child, between fork and exec
# ------------------------------------------------------------------------------------------


#: Signals whose disposition the launcher changes; everything else it set to SIG_DFL at start,
#: so the child only has these to undo, not a loop over every signal on each job's start.
_LAUNCHER_SIGNALS = (signal.SIGCHLD, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ)


_SPAWN_SIGDEF = tuple(_LAUNCHER_SIGNALS)


def restricted_plan(plan: dict[str, Any]) -> bool:
    """Whether a restricted launcher starts this plan: one whose job may hold no capability
    and gain none (``no_new_privileges`` and ``capabilities = set()``, what the runas plugin
    asks for every unprivileged job), with nothing else to apply in the child.

    A restricted launcher has applied exactly that to itself once (see :func:`_restrict`),
    so each child inherits it and needs no code of its own before exec.
    """
    return bool(
        plan["no_new_privileges"]
        and plan["capabilities"] == []
        and not (plan["namespaces"] or plan["rlimits"] or plan["readonly_paths"])
    )


def _needs_fork(plan: dict[str, Any], restricted: bool) -> bool:
    """Whether the child must run code of its own before exec: what neither posix_spawn,
    nor subprocess's fork in C (a new uid, gid and groups), nor the launcher standing where
    the job starts (its cgroups, its directory) can give."""
    if restricted:
        return not restricted_plan(plan)
    return bool(
        plan["namespaces"]
        or plan["rlimits"]
        or plan["no_new_privileges"]
        or plan["capabilities"] is not None
        or plan["readonly_paths"]
    )


def _exec_failed(plan: dict[str, Any], exc: OSError) -> dict[str, Any]:
    """The report of a spawn whose exec of the plan's program failed with ``exc``."""
    detail = f"{exc.strerror or exc}: {plan['executable']!r}"
    return {"stage": "exec", "errno": exc.errno or 0, "error": detail}


def _new_identity(plan: dict[str, Any]) -> bool:
    return plan["uid"] is not None or plan["gid"] is not None


def _cgroup_homes() -> dict[str, str]:
    """Each cgroup mount point, and the directory of the launcher's own cgroup under it.

    From ``/proc/self/mountinfo`` (which hierarchy each mount is: its controllers, or
    ``cgroup2``) and ``/proc/self/cgroup`` (where this process is in each). A mount whose
    root does not contain our cgroup (another namespace's view) is left out.
    """
    own: dict[str, str] = {}
    controllers: set[str] = set()
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, listed, path = line.rstrip("\n").split(":", 2)
                own[",".join(sorted(listed.split(",")))] = path
        with open("/proc/cgroups") as f:
            controllers = {line.split()[0] for line in f if not line.startswith("#")}
    except (OSError, ValueError):
        return {}
    homes: dict[str, str] = {}
    for mount, fstype, root, options in _cgroup_mounts():
        if fstype == CGROUP2_FSTYPE:
            key = ""
        else:
            names = [o for o in options if o in controllers or o.startswith("name=")]
            key = ",".join(sorted(names))
        where = own.get(key)
        if where is None:
            continue
        if root != "/":
            if where != root and not where.startswith(root + "/"):
                continue
            where = where[len(root) :]
        homes[mount] = (mount.rstrip("/") + where).rstrip("/") or "/"
    return homes


def _cgroup_mounts() -> list[tuple[str, str, str, list[str]]]:
    """Every cgroup mount (``/proc/self/mountinfo``): its mount point, file system type
    (``cgroup`` or ``cgroup2``), root within the hierarchy and super options."""
    mounts = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            # mount ID, parent, dev, root, mount point, options, optional fields..., -, type,
            # source, super options
            dash = fields.index("-")
            fstype = fields[dash + 1]
            if fstype in ("cgroup", CGROUP2_FSTYPE):
                mounts.append((fields[4], fstype, fields[3], fields[dash + 3].split(",")))
    return mounts


def _join(procs: str) -> None:
    """Move this whole process into the cgroup whose ``cgroup.procs`` is ``procs``."""
    fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _default_all_signals() -> None:
    """Once, in the launcher: forget dispositions inherited from whoever started the engine."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(sig, signal.SIG_DFL)


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in _LAUNCHER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _make_readonly(path: str) -> None:
    """Make ``path`` and every mount below it read-only, in this (private) mount namespace.

    A bind of the path onto itself first, so that a path that is not a mount point
    (``/proc/sys``) is made read-only alone, not the whole of ``/proc``; then one recursive
    ``mount_setattr``, which reaches the submounts too (``/sys/fs/cgroup/*``), where a
    ``MS_REMOUNT`` would only change the top one. Without ``CAP_SYS_ADMIN`` (which a root
    job's reduced capability set lacks) the job cannot make them writable again.
    """
    encoded = path.encode()
    _check(_libc.mount(encoded, encoded, None, MS_BIND | MS_REC, None), "readonly", f"bind {path}")
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    result = _libc.syscall(
        SYS_MOUNT_SETATTR,
        AT_FDCWD,
        ctypes.c_char_p(encoded),
        AT_RECURSIVE,
        ctypes.byref(attr),
        ctypes.sizeof(attr),
    )
    _check(int(result), "readonly", f"make {path} read-only (mount_setattr, Linux 5.12+)")


def _capget() -> tuple[int, int, int]:
    """This process's effective, permitted and inheritable capability sets, as bit masks."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capabilities", "capget")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def _drop_bounding_set(keep: list[int]) -> bool:
    """Drop every capability but ``keep`` from the bounding set; False if this process may
    not (an unprivileged launcher, which holds none to pass on).

    Done while still privileged: PR_CAPBSET_DROP needs CAP_SETPCAP, which a switch to an
    unprivileged uid clears. It does not touch the effective set, so setuid still works.
    """
    if not _capget()[0] >> CAP_SETPCAP & 1:
        return False
    kept = set(keep)
    for cap in range(MAX_CAPABILITY + 1):
        if cap in kept:
            continue
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL:  # past the kernel's last capability
                break
            raise ChildSetupError("capabilities", err, f"drop capability {cap}: {os.strerror(err)}")
    return True


def _limit_capability_sets(keep: list[int]) -> None:
    """Cut the effective and permitted sets to ``keep``; clear the inheritable and ambient ones.

    The bounding set alone is not enough: a process keeps what it already holds, and what
    is inheritable is added back at ``execve`` whatever the bounding set says. A root job
    gets its bounding set (``keep``) back at ``execve``; nothing needs to be inheritable.
    """
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    _, permitted, _ = _capget()
    mask &= permitted  # a set may only shrink
    _set_capabilities(mask, mask)
    _clear_ambient()


def _set_capabilities(effective: int, permitted: int) -> None:
    """Set this process's effective and permitted sets (bit masks); clear the inheritable."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capabilities", "capset")


def _clear_ambient() -> None:
    # EINVAL before Linux 4.3, which has no ambient set to clear.
    if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            raise ChildSetupError("capabilities", err, f"clear ambient: {os.strerror(err)}")


def _apply_plan(
    plan: dict[str, Any],
    cgroup_procs: list[str],
    out_fd: int,
    err_fd: int,
    error_w: int,
    launcher_pid: int,
) -> None:
    """Everything the job needs before exec; raises ChildSetupError naming the stage."""
    stage = "session"
    try:
        _reset_signals()
        os.setsid()
        stage = "pdeathsig"
        _check(
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), stage, "prctl(PR_SET_PDEATHSIG)"
        )
        if os.getppid() != launcher_pid:  # the launcher died between fork and prctl
            os._exit(1)
        # Join the cgroups first: from here on everything the job does, forks included, is
        # accounted and limited. (A cgroup v2 one it was cloned into is not in the list.)
        stage = "cgroup"
        for procs in cgroup_procs:
            with open(procs, "w") as f:
                f.write("0")
        stage = "oom_score_adj"
        # An engine protected from the OOM killer must not pass that protection on. Lowering
        # a raised value needs privilege; an unprivileged engine cannot have lowered it anyway.
        with contextlib.suppress(PermissionError), open("/proc/self/oom_score_adj", "w") as f:
            f.write("0")
        stage = "rlimit"
        for name, (soft, hard) in plan["rlimits"].items():
            resource.setrlimit(
                getattr(resource, name),
                (
                    resource.RLIM_INFINITY if soft < 0 else soft,
                    resource.RLIM_INFINITY if hard < 0 else hard,
                ),
            )
        stage = "stdio"
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        # Nothing else is inherited: only 0, 1, 2 (and the close-on-exec error pipe) survive.
        os.closerange(3, error_w)
        os.closerange(error_w + 1, 1 << 20)
        namespaces = set(plan["namespaces"])
        if "pid" in namespaces or plan["readonly_paths"]:
            # A fresh /proc, and read-only mounts, need a private mount namespace: never
            # remount the host's.
            namespaces.add("mount")
        flags = 0
        for ns in namespaces:
            flags |= NAMESPACE_FLAGS.get(ns, 0)
        stage = "unshare"
        if flags:
            _check(_libc.unshare(flags), stage, f"unshare({','.join(sorted(namespaces))})")
        if "mount" in namespaces:
            stage = "mount"
            _check(
                _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), stage, "make / private"
            )
        if "net" in namespaces:
            stage = "network"
            _loopback_up()
        if "pid" in namespaces:
            stage = "pid namespace"
            _check(_libc.unshare(CLONE_NEWPID), stage, "unshare(pid)")
            init = os.fork()
            if init != 0:
                _relay_init(init, error_w)
            # Now PID 1 of the new namespace.
            _check(
                _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0),
                stage,
                "prctl(PR_SET_PDEATHSIG)",
            )
            _check(
                _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
                stage,
                "mount /proc",
            )
        if plan["readonly_paths"]:
            stage = "readonly"
            # After the fresh /proc (its /proc/sys is the one the job sees), before the
            # capabilities that mount needs are dropped.
            for path in plan["readonly_paths"]:
                if os.path.lexists(path):  # absent (no sysrq in this kernel): nothing to guard
                    _make_readonly(path)
        keep = plan["capabilities"]
        no_new_privileges = plan["no_new_privileges"]
        if keep is not None:
            stage = "capabilities"
            # Unprivileged, the bounding set stays, and no_new_privs keeps the job from
            # gaining what it holds through setuid or file-capability programs.
            no_new_privileges = not _drop_bounding_set(keep) or no_new_privileges
        stage = "credentials"
        if plan["gid"] is not None or plan["uid"] is not None:
            os.setgroups(plan["groups"] or [])
        if plan["gid"] is not None:
            os.setgid(plan["gid"])
        if plan["uid"] is not None:
            os.setuid(plan["uid"])
        if keep is not None:
            stage = "capabilities"
            _limit_capability_sets(keep)
        stage = "credentials"
        if no_new_privileges:
            _check(
                _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), stage, "prctl(PR_SET_NO_NEW_PRIVS)"
            )
        stage = "cwd"
        os.chdir(plan["cwd"])
        stage = "exec"
        os.execve(plan["executable"], plan["argv"], plan["env"])
    except ChildSetupError:
        raise
    except OSError as exc:
        target = {"cwd": plan["cwd"], "exec": plan["executable"]}.get(stage)
        detail = f"{exc.strerror or exc}" + (f": {target!r}" if target else "")
        raise ChildSetupError(stage, exc.errno or 0, detail) from exc
    except Exception as exc:
        raise ChildSetupError(stage, 0, f"{type(exc).__name__}: {exc}") from exc


def _restrict() -> None:
    """Make this launcher a restricted one: what the fork path applies in the child of a
    plan with ``no_new_privileges`` and ``capabilities = set()``, applied once, here, and
    inherited by every child (see :func:`restricted_plan`).

    The bounding set is emptied (with CAP_SETPCAP: an unprivileged launcher holds nothing
    to pass on), the inheritable and ambient sets cleared, and no_new_privs set. The
    launcher's own effective and permitted sets stay: it still joins cgroups, gives each
    child the job's identity, and signals jobs; none of that involves an ``execve`` of its
    own, the only thing these sets and no_new_privs change.
    """
    if _capget()[0] >> CAP_SETPCAP & 1:
        _drop_bounding_set([])
    effective, permitted, _ = _capget()
    _set_capabilities(effective, permitted)
    _clear_ambient()
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "credentials", "no_new_privs")


def _ignored(signum: int, frame: object) -> None:
    """The launcher's SIGINT and SIGHUP: caught rather than ignored, so a child started by
    subprocess (which resets only SIGPIPE and SIGXFSZ) does not inherit them ignored."""


def _relay_init(init_pid: int, error_w: int) -> None:
    """The job's parent when it is PID 1 of a namespace: wait for it and exit the same way.

    It holds no job descriptor and ignores the stop signals (which also reach the job itself),
    so the job decides how it ends; the launcher sees this process's exit as the job's.
    """
    os.close(error_w)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(init_pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    os._exit(os.waitstatus_to_exitcode(status))


def _child(
    plan: dict[str, Any],
    cgroup_procs: list[str],
    out_fd: int,
    err_fd: int,
    error_w: int,
    launcher_pid: int,
) -> None:
    try:
        _apply_plan(plan, cgroup_procs, out_fd, err_fd, error_w, launcher_pid)
        err = ChildSetupError("exec", 0, "execve returned")
    except ChildSetupError as exc:
        err = exc
    except BaseException as exc:
        err = ChildSetupError("setup", 0, f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(BaseException):
        os.write(
            error_w,
            json.dumps({"stage": err.stage, "errno": err.err, "error": err.message}).encode(),
        )
    os._exit(127)


# ------------------------------------------------------------------------------------------
# the launcher's own loop
# ------------------------------------------------------------------------------------------


def _descendants(root: int) -> list[int]:
    """PIDs below ``root`` in the process tree (children that left its session included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: parse after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cgroup2_mounts() -> list[str]:
    """Where cgroup v2 is mounted, longest first."""
    mounts = [mount for mount, fstype, _, _ in _cgroup_mounts() if fstype == CGROUP2_FSTYPE]
    return sorted(mounts, key=len, reverse=True)


class _Starting:
    """A forked child between ``fork`` and ``execve``: its setup is in progress.

    The launcher goes on serving other requests meanwhile; the child's close-on-exec error
    pipe says how setup ended (EOF alone: it exec'd; bytes: a setup failure report).
    """

    __slots__ = (
        "cgroup_procs",
        "deadline",
        "error_r",
        "exit",
        "job",
        "pid",
        "pidfd",
        "placement",
        "report",
        "request",
    )

    def __init__(
        self,
        message: dict[str, Any],
        pid: int,
        pidfd: int,
        error_r: int,
        placement: str,
    ) -> None:
        self.request: int = message["id"]
        self.job: str = message["job"]
        self.cgroup_procs: list[str] = message["plan"]["cgroup_procs"]
        self.pid, self.pidfd, self.error_r = pid, pidfd, error_r
        self.deadline = time.monotonic() + CHILD_SETUP_TIMEOUT
        self.report = b""
        # (status, rusage) if the child was reaped before its pipe said how setup went.
        self.exit: tuple[int, resource.struct_rusage] | None = None
        self.placement = placement


class Launcher:
    def __init__(self, sock: socket.socket, restricted: bool = False) -> None:
        self.sock = sock
        # Started restricted (see _restrict): it starts only plans that ask for as much.
        self.restricted = restricted
        self._groups = os.getgroups()  # ours, to come back to after a chdir as a job's user
        self.jobs: dict[int, dict[str, Any]] = {}  # pid -> {"job": id, "cgroup_procs": [...]}
        self.starting: dict[int, _Starting] = {}
        # Children that timed out in setup: killed, reported failed, reaped silently.
        self.abandoned: set[int] = set()
        self.sel = selectors.DefaultSelector()
        self.pid = os.getpid()
        self._cgroup2: list[str] | None = None
        self._clone3 = True  # until the kernel says it has no CLONE_INTO_CGROUP
        # Mount point -> our own cgroup there, to come back to after a spawn in place.
        self._homes: dict[str, str] | None = None
        self._home_ok: set[str] = set()  # homes we have once moved into (so we can return)
        self._in_place = True  # until coming back home once failed
        # Orphans of jobs (a daemon whose parent exited) are reparented here rather than to
        # init: they are reaped, and they are still found and killed when the engine goes.
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _default_all_signals()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r = wake_r
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _ignored)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        with contextlib.suppress(OSError):
            if fds:
                socket.send_fds(self.sock, [json.dumps(message).encode()], fds)
            else:
                self.sock.send(json.dumps(message).encode())

    def run(self) -> None:
        sel = self.sel
        sel.register(self.sock, selectors.EVENT_READ, "sock")
        sel.register(self.wake_r, selectors.EVENT_READ, "child")
        self.send({"op": "ready", "pid": self.pid})
        while True:
            for key, _ in sel.select(self._next_deadline()):
                if key.data == "child":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 4096):
                            pass
                    self.reap()
                elif isinstance(key.data, _Starting):
                    self._setup_progress(key.data)
                elif not self._serve_one():
                    return
            if self.starting:
                self._expire_setups()
            # No reap here: a SIGCHLD that arrived meanwhile left its byte in the wake-up pipe,
            # so the next select returns at once and reaps (two waitid calls less per job).

    def _serve_one(self) -> bool:
        """Handle one request from the engine; False when the launcher must exit."""
        try:
            data, fds = recv_with_fds(self.sock, MAX_MESSAGE, 4)
        except (ConnectionResetError, InterruptedError):
            data, fds = b"", []
        if not data:
            self.kill_everything()
            return False
        message = json.loads(data)
        op = message["op"]
        if op == "spawn":
            self.spawn(message, fds)
        elif op == "signal":
            for fd in fds:
                os.close(fd)
            self.signal(message)
        elif op == "shutdown":
            self.kill_everything()
            self.send({"op": "bye"})
            return False
        return True

    def _next_deadline(self) -> float | None:
        if not self.starting:
            return None
        soonest = min(s.deadline for s in self.starting.values())
        return max(0.0, soonest - time.monotonic())

    # ------------------------------------------------------------------ spawning

    def spawn(self, message: dict[str, Any], fds: list[int]) -> None:
        out_fd, err_fd = fds
        plan = message["plan"]
        try:
            spawned = None
            if not _needs_fork(plan, self.restricted):
                spawned = self._spawn_in_place(plan, out_fd, err_fd)
            if spawned is None:
                # Answered when the child's setup ends (see _setup_progress), not now: other
                # requests are served while this child is setting itself up.
                self._fork_and_apply(message, plan, out_fd, err_fd)
                return
            pid, report = spawned
        finally:
            os.close(out_fd)
            os.close(err_fd)
        if report is not None:
            self.send({"op": "spawn_failed", "id": message["id"], "job": message["job"], **report})
            return
        # A pidfd, opened before the launcher could reap the PID, lets the engine kill the job
        # race-free even if this launcher dies (a posix_spawn'd job has no parent-death signal).
        pidfd = os.pidfd_open(pid)
        how = "a spawn from inside it" if plan["cgroup_procs"] else ""
        self._started(message["id"], message["job"], pid, pidfd, plan["cgroup_procs"], how)

    def _started(
        self, request: int, job: str, pid: int, pidfd: int, cgroup_procs: list[str], how: str
    ) -> None:
        self.jobs[pid] = {"job": job, "cgroup_procs": cgroup_procs}
        reply = {"op": "spawned", "id": request, "job": job, "pid": pid, "placement": how}
        self.send(reply, [pidfd])
        os.close(pidfd)

    def _spawn_in_place(
        self, plan: dict[str, Any], out_fd: int, err_fd: int
    ) -> tuple[int, dict[str, Any] | None] | None:
        """posix_spawn from where the job must start: the launcher joins the job's cgroups and
        enters its directory, spawns (the child is born inside them, and never runs outside
        for an instant), then goes back to its own. None: this plan needs the fork path.

        vfork shares the launcher's memory instead of copying it: in a forked child each page
        the interpreter touches before exec is a copy-on-write fault, which is most of what a
        confined start costs (``bench/README.md``). The launcher is single-threaded and does
        nothing else meanwhile, so nothing else of it runs inside a job's cgroup; its moment
        there adds a few microseconds of CPU to the job's account.
        """
        procs: list[str] = plan["cgroup_procs"]
        homes: list[str] = []
        if procs:
            if not self._in_place:
                return None
            if self._homes is None:
                self._homes = _cgroup_homes()
            for path in procs:
                home = self._home_of(path)
                if home is None:  # not a cgroup file we can come back from: the child joins
                    return None
                homes.append(home)
        joined: list[str] = []
        moved = False
        try:
            for path in procs:
                _join(path)
                joined.append(path)
            if _new_identity(plan):
                # Entered as the job's user: a directory it may not enter, it does not start
                # in (the fork path, which then reports it, changes identity first too).
                moved = True
                self._chdir_as(plan)
                pid, report = self._popen(plan, out_fd, err_fd)
            else:
                if plan["cwd"] != "/":
                    moved = True
                    os.chdir(plan["cwd"])
                pid, report = self._posix_spawn(plan, out_fd, err_fd)
        except OSError:
            # The fork path does the same in the child and reports what failed, and where.
            return None
        finally:
            if moved:
                os.chdir("/")
            self._go_home(homes[: len(joined)])
        if report is not None and report["errno"] == errno.EAGAIN and procs:
            return None  # the job's pids.max counted the launcher too: the child joins alone
        return pid, report

    def _home_of(self, procs: str) -> str | None:
        """Our own ``cgroup.procs`` in the hierarchy of ``procs``; None if there is none, or
        if moving into it fails (a v2 cgroup that may hold no process of its own, a
        delegation that does not reach it): we never leave a home we cannot come back to."""
        assert self._homes is not None
        for mount, home in self._homes.items():
            if procs.startswith(mount.rstrip("/") + "/"):
                path = home.rstrip("/") + "/cgroup.procs"
                if path not in self._home_ok:
                    try:
                        _join(path)  # where we are already: changes nothing if it succeeds
                    except OSError:
                        return None
                    self._home_ok.add(path)
                return path
        return None

    def _go_home(self, homes: list[str]) -> None:
        for home in homes:
            try:
                _join(home)
            except OSError as exc:
                # Never again: the launcher must not stay in a job's cgroup (its kill would
                # reach the launcher). Jobs join their cgroups from the child from now on.
                self._in_place = False
                with contextlib.suppress(OSError):
                    os.write(2, f"worker launcher: cannot return to {home}: {exc}\n".encode())

    def _posix_spawn(
        self, plan: dict[str, Any], out_fd: int, err_fd: int
    ) -> tuple[int, dict[str, Any] | None]:
        """The fast path for a job with nothing to apply in the child: posix_spawn (vfork) does
        not copy the launcher's page tables as fork does (``bench/README.md`` has figures).

        Everything else the child needs holds by construction: the launcher's own descriptors
        are close-on-exec, its signal dispositions were reset at start, its ``oom_score_adj``
        is 0 and its working directory is the plan's.
        """
        try:
            pid = os.posix_spawn(
                plan["executable"],
                plan["argv"],
                plan["env"],
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_fd, 1),
                    (os.POSIX_SPAWN_DUP2, err_fd, 2),
                ],
                setsid=True,
                setsigdef=_SPAWN_SIGDEF,
                setsigmask=(),
            )
        except OSError as exc:
            return 0, _exec_failed(plan, exc)
        return pid, None

    def _chdir_as(self, plan: dict[str, Any]) -> None:
        """chdir to the plan's directory with the job's uid, gid and groups as the effective
        ones. The real and saved uid stay the launcher's throughout, so no process of the
        job's user may signal the launcher meanwhile, and the switch back always succeeds.
        Raises OSError if the switch or the chdir fails (the caller then takes the fork
        path, whose child reports it)."""
        uid, gid = plan["uid"], plan["gid"]
        euid, egid = os.geteuid(), os.getegid()
        os.setgroups(plan["groups"] or [])  # an unprivileged launcher fails here: nothing changed
        try:
            if gid is not None:
                os.setegid(gid)
            if uid is not None:
                os.seteuid(uid)
            os.chdir(plan["cwd"])
        finally:
            try:
                os.seteuid(euid)
                os.setegid(egid)
                os.setgroups(self._groups)
            except OSError as exc:
                # Never spawn another job with a job's identity left behind: stop; the engine
                # notices at once and starts another launcher.
                with contextlib.suppress(OSError):
                    os.write(2, f"worker launcher: cannot restore its identity: {exc}\n".encode())
                os._exit(70)

    def _popen(
        self, plan: dict[str, Any], out_fd: int, err_fd: int
    ) -> tuple[int, dict[str, Any] | None]:
        """A job with an identity of its own and nothing else to apply in the child: subprocess
        forks and switches uid, gid and groups in C, so the child touches a few pages of the
        launcher instead of running Python in a copy of it (most of what the fork path costs).

        Everything else holds as for posix_spawn (see there): the launcher's signal
        dispositions are default or caught (reset at exec), its mask empty, its working
        directory the plan's (entered as the job's user, see _chdir_as).
        """
        import subprocess  # only launchers that start jobs with an identity pay for it

        try:
            child = subprocess.Popen(
                plan["argv"],
                executable=plan["executable"],
                env=plan["env"],
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                close_fds=True,
                start_new_session=True,
                restore_signals=True,
                user=plan["uid"],
                group=plan["gid"],
                extra_groups=plan["groups"] or [],
            )
        except OSError as exc:
            if exc.filename == plan["executable"]:
                return 0, _exec_failed(plan, exc)
            stage = "credentials" if exc.errno != errno.EAGAIN else "fork"
            return 0, {"stage": stage, "errno": exc.errno or 0, "error": str(exc.strerror or exc)}
        except (subprocess.SubprocessError, ValueError, TypeError) as exc:
            # Not a system call's refusal (a NUL in an argument): the job fails, the launcher
            # goes on.
            return 0, {"stage": "setup", "errno": 0, "error": f"{type(exc).__name__}: {exc}"}
        # Reaped by this launcher's own loop, like every job: marked done so that Popen never
        # waits for it (subprocess reaps the unfinished Popens it still knows of on each new
        # one, and would take the job's exit, or a later job's reused PID, from us).
        child.returncode = 0
        return child.pid, None

    def _fork_and_apply(
        self, message: dict[str, Any], plan: dict[str, Any], out_fd: int, err_fd: int
    ) -> None:
        error_r, error_w = os.pipe2(os.O_CLOEXEC)
        to_write = list(plan["cgroup_procs"])
        placement = ""
        pid, pidfd = -1, -1
        into = self._cgroup2_target(to_write)
        if into is not None:
            pid, pidfd = self._clone_into(into)
            if pid >= 0:
                to_write.remove(into)
                placement = "clone3"
        if pid < 0:
            pid = os.fork()
        if pid == 0:
            _child(plan, to_write, out_fd, err_fd, error_w, self.pid)
        os.close(error_w)
        if pidfd < 0:
            pidfd = os.pidfd_open(pid)
        starting = _Starting(message, pid, pidfd, error_r, placement)
        self.starting[pid] = starting
        self.sel.register(error_r, selectors.EVENT_READ, starting)

    def _cgroup2_target(self, cgroup_procs: list[str]) -> str | None:
        """The plan's cgroup v2 ``cgroup.procs``, if it has one and clone3 can place a child."""
        if not self._clone3 or not cgroup_procs:
            return None
        if self._cgroup2 is None:
            self._cgroup2 = _cgroup2_mounts()
        for procs in cgroup_procs:
            if any(procs.startswith(mount.rstrip("/") + "/") for mount in self._cgroup2):
                return procs
        return None

    def _clone_into(self, procs: str) -> tuple[int, int]:
        """clone3 with CLONE_INTO_CGROUP: the child starts inside the cgroup v2 whose
        ``cgroup.procs`` is ``procs``, with no write of its own and no instant outside it.

        Returns (pid, pidfd) in the launcher, (0, -1) in the child, (-1, -1) when it cannot
        (an old kernel, or the cgroup refuses: the fork path then writes ``cgroup.procs``
        itself, and reports a failure with its reason).
        """
        try:
            cgroup_fd = os.open(os.path.dirname(procs), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return -1, -1
        pidfd = ctypes.c_int(-1)
        args = _CloneArgs()
        args.flags = CLONE_PIDFD | CLONE_INTO_CGROUP
        args.pidfd = ctypes.addressof(pidfd)
        args.exit_signal = signal.SIGCHLD
        args.cgroup = cgroup_fd
        pid = int(
            _pylibc.syscall(
                ctypes.c_long(SYS_CLONE3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args))
            )
        )
        if pid == 0:
            return 0, -1  # the child: setup closes this descriptor with every other one
        err = ctypes.get_errno()
        os.close(cgroup_fd)
        if pid < 0:
            if err in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):
                self._clone3 = False  # this kernel cannot: do not ask again
            return -1, -1
        return pid, pidfd.value

    def _setup_progress(self, starting: _Starting) -> None:
        """The child's error pipe is readable: a report, or EOF (setup over)."""
        try:
            part = os.read(starting.error_r, 65536)
        except InterruptedError:
            return
        if part:
            starting.report += part
            return
        self._setup_done(starting)

    def _forget_setup(self, starting: _Starting) -> None:
        """Stop watching a child's setup: its error pipe closed and its entry gone."""
        self.sel.unregister(starting.error_r)
        os.close(starting.error_r)
        del self.starting[starting.pid]

    def _setup_done(self, starting: _Starting) -> None:
        self._forget_setup(starting)
        if starting.report:
            # The child never exec'd; it has exited (or is exiting). Reap it here so the
            # engine never hears of it as a job exit.
            if starting.exit is None:
                self._reap_now(starting.pid)
            os.close(starting.pidfd)
            try:
                report: dict[str, Any] = json.loads(starting.report)
            except ValueError:
                error = starting.report.decode(errors="replace")
                report = {"stage": "setup", "errno": 0, "error": error}
            self.send({"op": "spawn_failed", "id": starting.request, "job": starting.job, **report})
            return
        self._started(
            starting.request,
            starting.job,
            starting.pid,
            starting.pidfd,
            starting.cgroup_procs,
            starting.placement,
        )
        if starting.exit is not None:  # it exec'd and was done before its pipe was read
            self._report_exit(starting.pid, *starting.exit)

    def _expire_setups(self) -> None:
        """Kill and report children whose setup outlived its bound (stuck in the kernel)."""
        now = time.monotonic()
        for starting in [s for s in self.starting.values() if s.deadline <= now]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(starting.pid, signal.SIGKILL)
            self._forget_setup(starting)
            os.close(starting.pidfd)
            if starting.exit is None:
                self.abandoned.add(starting.pid)
            error = f"the job did not start within {CHILD_SETUP_TIMEOUT:g}s"
            self.send(
                {
                    "op": "spawn_failed",
                    "id": starting.request,
                    "job": starting.job,
                    "stage": "setup",
                    "errno": errno.ETIMEDOUT,
                    "error": error,
                }
            )

    def _reap_now(self, pid: int) -> None:
        while True:
            try:
                os.waitpid(pid, 0)
                return
            except InterruptedError:
                continue
            except ChildProcessError:
                return

    # ------------------------------------------------------------------ signals and exits

    def signal(self, message: dict[str, Any]) -> None:
        pid, signum = message["pid"], message["signum"]
        delivered = pid in self.jobs  # unreaped: the PID (and its group) are still the job's
        if delivered:
            self._signal_tree(pid, signum)
        self.send({"op": "signalled", "id": message["id"], "delivered": delivered})

    def _signal_tree(self, pid: int, signum: int) -> None:
        # List the descendants first: once the group is signalled the job may die at once, and
        # a child that left its session would be reparented out of reach of the walk.
        below = _descendants(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)
        for child in below:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signum)

    def reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            known = pid in self.jobs or pid in self.starting
            if known:
                # The job's main process is a zombie: its PID and process group cannot be
                # reused yet, so killing what it left in its group is race-free.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            try:
                _, status, usage = os.wait4(pid, 0)
            except ChildProcessError:
                continue
            self.abandoned.discard(pid)
            starting = self.starting.get(pid)
            if starting is not None:
                # Its pipe has not been read to the end yet: the engine hears of the exit
                # after the spawn reply (see _setup_done).
                starting.exit = (status, usage)
            elif pid in self.jobs:
                self._report_exit(pid, status, usage)

    def _report_exit(self, pid: int, status: int, usage: resource.struct_rusage) -> None:
        entry = self.jobs.pop(pid, None)
        if entry is None:
            return
        self.send(
            {
                "op": "exit",
                "job": entry["job"],
                "pid": pid,
                "status": status,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "max_rss_bytes": usage.ru_maxrss * 1024,
            }
        )

    def kill_everything(self) -> None:
        """The engine is gone or shutting down: no job may outlive it."""
        for starting in list(self.starting.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(starting.pid, signal.SIGKILL)
            for procs in starting.cgroup_procs:
                self._kill_cgroup(procs)
        for pid, entry in list(self.jobs.items()):
            self._signal_tree(pid, signal.SIGKILL)
            for procs in entry["cgroup_procs"]:
                self._kill_cgroup(procs)
        # Whatever else is below the launcher: orphans of jobs, reparented here.
        for orphan in _descendants(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(orphan, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while (self.jobs or self.starting) and time.monotonic() < deadline:
            self.reap()
            for starting in list(self.starting.values()):
                if starting.exit is not None:
                    self._forget_setup(starting)
                    os.close(starting.pidfd)
            time.sleep(0.01)

    @staticmethod
    def _kill_cgroup(procs: str) -> None:
        for _ in range(20):
            try:
                # Non-blocking: a plan's path that is not a cgroup file (a FIFO) must not
                # hang the launcher's last act.
                fd = os.open(procs, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    text = os.read(fd, 1 << 20)
                finally:
                    os.close(fd)
                pids = [int(line) for line in text.split() if line.strip().isdigit()]
            except OSError:
                return
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)


def main() -> None:
    # Forked children touch fewer pages (less copy-on-write) when the collector neither runs
    # nor walks the launcher's objects; the launcher allocates little, so nothing piles up.
    gc.disable()
    gc.freeze()
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)
    os.chdir("/")  # the posix_spawn fast path relies on it
    with contextlib.suppress(PermissionError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("0")
    restricted = sys.argv[2:3] == ["restricted"]
    if restricted:
        _restrict()
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MAX_MESSAGE)
    Launcher(sock, restricted).run()


if __name__ == "__main__":
    main()
