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
``signal`` request is never delivered to a PID it has already reaped. When the engine's end of
the socket closes (the engine died), it kills every job and exits: nothing is orphaned.
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


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
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


def _needs_fork(plan: dict[str, Any]) -> bool:
    """Whether the child must run code before exec (anything posix_spawn cannot express)."""
    return bool(
        plan["cgroup_procs"]
        or plan["namespaces"]
        or plan["rlimits"]
        or plan["uid"] is not None
        or plan["gid"] is not None
        or plan["no_new_privileges"]
        or plan["capabilities"] is not None
        or plan["readonly_paths"]
        or plan["cwd"] != "/"
    )


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
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
    _check(_libc.capset(ctypes.byref(header), data), "capabilities", "capset")
    # EINVAL before Linux 4.3, which has no ambient set to clear.
    if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            raise ChildSetupError("capabilities", err, f"clear ambient: {os.strerror(err)}")


def _apply_plan(
    plan: dict[str, Any], out_fd: int, err_fd: int, error_w: int, launcher_pid: int
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
        # accounted and limited.
        stage = "cgroup"
        for procs in plan["cgroup_procs"]:
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


def _child(plan: dict[str, Any], out_fd: int, err_fd: int, error_w: int, launcher_pid: int) -> None:
    try:
        _apply_plan(plan, out_fd, err_fd, error_w, launcher_pid)
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


class Launcher:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.jobs: dict[int, dict[str, Any]] = {}  # pid -> {"job": id, "cgroup_procs": [...]}
        self.pid = os.getpid()
        # Orphans of jobs (a daemon whose parent exited) are reparented here rather than to
        # init: they are reaped, and they are still found and killed when the engine goes.
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _default_all_signals()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r = wake_r
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)

    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps(message).encode())

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "sock")
        sel.register(self.wake_r, selectors.EVENT_READ, "child")
        self.send({"op": "ready", "pid": self.pid})
        while True:
            for key, _ in sel.select():
                if key.data == "child":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 4096):
                            pass
                    self.reap()
                    continue
                try:
                    data, fds = recv_with_fds(self.sock, MAX_MESSAGE, 4)
                except (ConnectionResetError, InterruptedError):
                    data, fds = b"", []
                if not data:
                    self.kill_everything()
                    return
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
                    return
            # A SIGCHLD may have arrived while handling a message; reaping is cheap.
            self.reap()

    def spawn(self, message: dict[str, Any], fds: list[int]) -> None:
        out_fd, err_fd = fds
        plan = message["plan"]
        if _needs_fork(plan):
            pid, report = self._fork_and_apply(plan, out_fd, err_fd)
        else:
            pid, report = self._posix_spawn(plan, out_fd, err_fd)
        os.close(out_fd)
        os.close(err_fd)
        if report is not None:
            self.send({"op": "spawn_failed", "id": message["id"], "job": message["job"], **report})
            return
        # A pidfd, opened before the launcher could reap the PID, lets the engine kill the job
        # race-free even if this launcher dies (a posix_spawn'd job has no parent-death signal).
        pidfd = os.pidfd_open(pid)
        self.jobs[pid] = {"job": message["job"], "cgroup_procs": plan["cgroup_procs"]}
        reply = {"op": "spawned", "id": message["id"], "job": message["job"], "pid": pid}
        with contextlib.suppress(OSError):
            socket.send_fds(self.sock, [json.dumps(reply).encode()], [pidfd])
        os.close(pidfd)

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
            detail = f"{exc.strerror or exc}: {plan['executable']!r}"
            return 0, {"stage": "exec", "errno": exc.errno or 0, "error": detail}
        return pid, None

    def _fork_and_apply(
        self, plan: dict[str, Any], out_fd: int, err_fd: int
    ) -> tuple[int, dict[str, Any] | None]:
        error_r, error_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            _child(plan, out_fd, err_fd, error_w, self.pid)
        os.close(error_w)
        report = self._read_child_report(error_r, pid)
        os.close(error_r)
        if report is not None:
            # The child never exec'd; it has exited (or is being killed). Reap it here so the
            # engine never hears of it as a job exit.
            self._reap_now(pid)
        return pid, report

    def _read_child_report(self, error_r: int, pid: int) -> dict[str, Any] | None:
        """Wait (bounded) for exec to close the pipe; any bytes written are a setup failure."""
        deadline = time.monotonic() + CHILD_SETUP_TIMEOUT
        data = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return {
                    "stage": "setup",
                    "errno": errno.ETIMEDOUT,
                    "error": f"the job did not start within {CHILD_SETUP_TIMEOUT:g}s",
                }
            sel = selectors.DefaultSelector()
            sel.register(error_r, selectors.EVENT_READ)
            ready = sel.select(remaining)
            sel.close()
            if not ready:
                continue
            try:
                part = os.read(error_r, 65536)
            except InterruptedError:
                continue
            if not part:
                break
            data += part
        if not data:
            return None
        try:
            report: dict[str, Any] = json.loads(data)
        except ValueError:
            report = {"stage": "setup", "errno": 0, "error": data.decode(errors="replace")}
        return report

    def _reap_now(self, pid: int) -> None:
        while True:
            try:
                os.waitpid(pid, 0)
                return
            except InterruptedError:
                continue
            except ChildProcessError:
                return

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
            entry = self.jobs.pop(pid, None)
            if entry is not None:
                # The job's main process is a zombie: its PID and process group cannot be
                # reused yet, so killing what it left in its group is race-free.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            try:
                _, status, usage = os.wait4(pid, 0)
            except ChildProcessError:
                continue
            if entry is not None:
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
        for pid, entry in list(self.jobs.items()):
            self._signal_tree(pid, signal.SIGKILL)
            for procs in entry["cgroup_procs"]:
                self._kill_cgroup(procs)
        # Whatever else is below the launcher: orphans of jobs, reparented here.
        for orphan in _descendants(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(orphan, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.jobs and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)

    @staticmethod
    def _kill_cgroup(procs: str) -> None:
        for _ in range(20):
            try:
                with open(procs) as f:
                    pids = [int(line) for line in f if line.strip()]
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
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MAX_MESSAGE)
    Launcher(sock).run()


if __name__ == "__main__":
    main()
