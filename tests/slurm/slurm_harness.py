"""A real Slurm cluster on this machine, made and unmade by the tests (../shared/SLURM.md).

One munged (its own key and socket), one slurmctld and one or more slurmd, all started here
with their state, spool and logs under a temporary directory, and stopped by PID at the end.
With ``nodes > 1`` each slurmd runs in a network namespace and a UTS namespace of its own,
on a bridge with a private test range that exists only inside this machine (no route out,
no forwarding), so the cluster has real separate node addresses.

Memory limits are enforced by Slurm (``TaskPlugin=task/cgroup``, ``ConstrainRAMSpace``, on
this host's cgroup v1 hierarchies) and CPU counts by ``ConstrainCores`` (cpusets).

Nothing is left behind: :meth:`SlurmCluster.stop` cancels every job, stops the daemons by
their PIDs (SIGTERM, then SIGKILL), kills any process still carrying the cluster's marker
in its environment (a job's ``slurmstepd``), removes the per-node cgroups Slurm made, the
namespaces, veths and bridge, and the directory.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

#: Where Debian installs the daemons and the clients.
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
#: The cgroup v1 controllers Slurm's cgroup plugins make ``slurm_<node>`` directories in.
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The environment variable that marks every daemon (and the slurmstepd they fork).
MARKER = "WORKER_SLURM_TEST_CLUSTER"


def find_binary(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def missing_binaries() -> list[str]:
    """The Slurm and MUNGE programs this machine lacks (empty: a cluster can be made)."""
    return [name for name in (*DAEMONS, *CLIENTS, "mungekey") if find_binary(name) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ClusterError(RuntimeError):
    """The cluster could not be made; the message carries the daemons' log tails."""


@attrs.define
class _Network:
    """A bridge and one namespace with a veth per node, names unique to this run."""

    tag: str
    subnet: ipaddress.IPv4Network
    bridge: str
    namespaces: list[str] = attrs.Factory(list)

    @property
    def controller_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def node_address(self, i: int) -> str:
        return str(self.subnet.network_address + 10 + i)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _unused_subnet() -> ipaddress.IPv4Network:
    used = subprocess.run(
        ["ip", "-4", "-o", "addr"], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    for third in range(203, 256):
        subnet = ipaddress.IPv4Network(f"10.{third}.{secrets.randbelow(256)}.0/24")
        if f" {subnet.network_address + 1}/" not in used and str(subnet)[:-5] not in used:
            return subnet
    raise ClusterError("no unused 10.x.y.0/24 test range on this machine")


def _make_network(tag: str, nodes: int) -> _Network:
    net = _Network(tag, _unused_subnet(), f"wsb{tag}")
    try:
        _ip("link", "add", net.bridge, "type", "bridge")
        _ip("addr", "add", f"{net.controller_address}/24", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        for i in range(1, nodes + 1):
            ns = f"wslurm-{tag}-{i}"
            _ip("netns", "add", ns)
            net.namespaces.append(ns)
            veth = f"wsv{tag}{i}"
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", net.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{net.node_address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except BaseException:
        _remove_network(net)
        raise
    return net


def _remove_network(net: _Network) -> None:
    # Deleting a namespace deletes its end of the veth pair, and with it the host's end.
    for ns in net.namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)
    for i in range(1, len(net.namespaces) + 1):
        subprocess.run(
            ["ip", "link", "del", f"wsv{net.tag}{i}"], capture_output=True, timeout=10, check=False
        )
    subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, timeout=10, check=False)


def leftover_network(tag: str) -> list[str]:
    """Namespaces and links of run ``tag`` that still exist (empty after stop)."""
    links = subprocess.run(
        ["ip", "-o", "link"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    spaces = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    found = [line.split()[0] for line in spaces.splitlines() if f"wslurm-{tag}-" in line]
    found += [name for name in (f"wsb{tag}", f"wsv{tag}1", f"wsv{tag}2") if f" {name}" in links]
    return found


def _slurm_conf(root: Path, name: str, nodes: Sequence[tuple[str, str]], ctld: str) -> str:
    memory = 16000 // len(nodes)
    node_lines = "\n".join(
        f"NodeName={node} NodeAddr={addr} NodeHostname={node} CPUs=2 RealMemory={memory} State=UNKNOWN"
        for node, addr in nodes
    )
    names = ",".join(node for node, _ in nodes)
    spool = "spool-%n" if len(nodes) > 1 else "spool"
    # MinJobAge: finished jobs stay visible to squeue for a while, as on real clusters
    # (Slurm's default is 300 s). CR_CPU_Memory: memory must be a consumable resource for
    # task/cgroup to confine a job to its --mem; a job without --mem gets DefMemPerCPU.
    return f"""\
ClusterName={name}
SlurmctldHost=localhost({ctld})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge-run/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/{spool}
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=128
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MaxJobCount=20000
MinJobAge=120
KillWait=5
SchedulerParameters=batch_sched_delay=0
{node_lines}
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:64
"""


CGROUP_CONF = """\
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0
ConstrainCores=yes
ConstrainDevices=no
"""


@attrs.define
class SlurmCluster:
    """A running cluster: ``conf`` is its slurm.conf (clients take it as ``SLURM_CONF``)."""

    root: Path
    name: str
    nodes: list[str]
    conf: Path
    procs: dict[str, subprocess.Popen[bytes]] = attrs.Factory(dict)
    network: _Network | None = None
    stopped: bool = False

    @property
    def env(self) -> dict[str, str]:
        """An environment for Slurm's clients: this cluster's config, nothing else."""
        return {"PATH": os.pathsep.join(SBIN), "SLURM_CONF": str(self.conf), "LC_ALL": "C"}

    def run(self, *args: str, timeout: float = 20.0, input: bytes | None = None) -> str:
        """A Slurm client command against this cluster; its stdout (fails on an error)."""
        result = subprocess.run(
            list(args), env=self.env, capture_output=True, timeout=timeout, input=input, check=False
        )
        if result.returncode != 0:
            raise ClusterError(
                f"{' '.join(args)}: exit {result.returncode}: {result.stderr.decode().strip()}"
            )
        return result.stdout.decode()

    def squeue(self, slurm_id: str, field: str) -> str:
        """One field (``squeue -O`` name) of one job as squeue reports it."""
        out = self.run("squeue", "-h", "-t", "all", "-j", slurm_id, "-O", f"{field}:|")
        return out.split("|")[0]

    def worker_ids(self) -> set[str]:
        """The worker job ids Slurm knows (the executor puts each in its job's comment)."""
        out = self.run("squeue", "-h", "-t", "all", "-O", "Comment:|")
        comments = (c.strip() for c in out.split("|"))
        return {c.removeprefix("worker:") for c in comments if c.startswith("worker:")}

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def logs(self) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.stderr")):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------------ stopping

    def stop(self) -> None:
        """Cancel every job, stop every daemon by PID, remove all the cluster made."""
        if self.stopped:
            return
        self.stopped = True
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.run("scancel", "--full", "--signal=KILL", "--state=RUNNING", "-u", "root")
                self.run("scancel", "-u", "root")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    out = self.run("squeue", "-h", "-o", "%i")
                except Exception:
                    break
                if not out.strip():
                    break
                time.sleep(0.2)
        for name in sorted(self.procs, key=lambda n: n.startswith("munged")):
            _stop_process(self.procs[name])
        _kill_marked(str(self.root))
        for node in self.nodes:
            _remove_cgroups(node)
        if self.network is not None:
            _remove_network(self.network)
        shutil.rmtree(self.root, ignore_errors=True)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)


def marked_processes(root: str) -> list[int]:
    """Live processes started for the cluster at ``root`` (daemons, slurmstepd, jobs)."""
    markers = (f"{MARKER}={root}".encode(), f"SLURM_CONF={root}/slurm.conf".encode())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in {"Z", "X"} and any(m in environ for m in markers):
            found.append(int(entry))
    return found


def _kill_marked(root: str) -> None:
    for _ in range(50):
        found = marked_processes(root)
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def node_cgroups(node: str) -> list[Path]:
    return sorted(CGROUP_ROOT.glob(f"*/slurm_{node}"))


def _remove_cgroups(node: str) -> None:
    """Slurm leaves its per-node directories (``slurm_<node>``) in each controller."""
    for top in node_cgroups(node):
        for _ in range(50):
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for path in [*dirs, top]:
                with contextlib.suppress(OSError):
                    path.rmdir()
            if not top.exists():
                break
            time.sleep(0.1)


# ------------------------------------------------------------------ starting


def _munge_dirs(root: Path) -> tuple[Path, Path]:
    munge = pwd.getpwnam("munge")
    private, public = root / "munge", root / "munge-run"
    for path, mode in ((private, 0o700), (public, 0o755)):
        path.mkdir()
        os.chown(path, munge.pw_uid, munge.pw_gid)
        path.chmod(mode)
    return private, public


def _spawn(
    cluster: SlurmCluster, name: str, argv: list[str], env: dict[str, str] | None = None
) -> None:
    with open(cluster.root / f"{name}.stderr", "wb") as out:
        cluster.procs[name] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cluster.root,
            env={**cluster.env, MARKER: str(cluster.root), **(env or {})},
            start_new_session=True,
        )


def _wait(cluster: SlurmCluster, what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited ({proc.returncode})\n{cluster.logs()}")
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise ClusterError(f"{what} within {timeout:g} s\n{cluster.logs()}")


def start_cluster(nodes: int = 1, timeout: float = 30.0) -> SlurmCluster:
    """munged, slurmctld and ``nodes`` slurmd, all idle; stop it with :meth:`SlurmCluster.stop`."""
    tag = secrets.token_hex(2)
    root = Path(tempfile.mkdtemp(prefix=f"worker-slurm-{tag}-"))
    root.chmod(0o755)  # munged, running as munge, must reach its socket directory
    names = [f"wt{tag}n{i}" for i in range(1, nodes + 1)]
    cluster = SlurmCluster(root, f"wt{tag}", names, root / "slurm.conf")
    try:
        for sub in ("state", "spool", *(f"spool-{n}" for n in names)):
            (root / sub).mkdir()
        private, public = _munge_dirs(root)
        munge = pwd.getpwnam("munge")
        key = private / "munge.key"
        subprocess.run(
            [str(find_binary("mungekey")), "-c", "-k", str(key)], check=True, capture_output=True
        )
        os.chown(key, munge.pw_uid, munge.pw_gid)
        _spawn(
            cluster,
            "munged",
            [
                "setpriv",
                f"--reuid={munge.pw_uid}",
                f"--regid={munge.pw_gid}",
                "--clear-groups",
                str(find_binary("munged")),
                "-F",
                f"--socket={public}/munge.socket",
                f"--key-file={key}",
                f"--log-file={private}/munged.log",
                f"--pid-file={public}/munged.pid",
                f"--seed-file={private}/munged.seed",
            ],
        )
        _wait(cluster, "munged made no socket", (public / "munge.socket").exists, timeout)
        if nodes > 1:
            cluster.network = _make_network(tag, nodes)
            addresses = [cluster.network.node_address(i) for i in range(1, nodes + 1)]
            ctld = cluster.network.controller_address
        else:
            addresses, ctld = ["127.0.0.1"], "127.0.0.1"
        cluster.conf.write_text(
            _slurm_conf(root, cluster.name, list(zip(names, addresses, strict=True)), ctld)
        )
        (root / "cgroup.conf").write_text(CGROUP_CONF)
        _spawn(cluster, "slurmctld", [str(find_binary("slurmctld")), "-D", "-f", str(cluster.conf)])
        _wait(cluster, "slurmctld did not answer", lambda: cluster.run("sinfo", "-h"), timeout)
        slurmd = str(find_binary("slurmd"))
        for i, node in enumerate(names, 1):
            argv = [slurmd, "-D", "-N", node, "-f", str(cluster.conf)]
            if cluster.network is not None:
                # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroup mounts.
                ns = cluster.network.namespaces[i - 1]
                argv = [
                    "nsenter",
                    f"--net=/run/netns/{ns}",
                    "unshare",
                    "--uts",
                    "sh",
                    "-c",
                    f'hostname {node} && exec "$@"',
                    "sh",
                    *argv,
                ]
            _spawn(cluster, f"slurmd-{node}", argv)

        def idle() -> bool:
            states = cluster.node_states()
            return all(states.get(n, "").startswith("idle") for n in names)

        _wait(cluster, "the nodes did not become idle", idle, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_cluster(nodes: int = 1) -> Iterator[SlurmCluster]:
    cluster = start_cluster(nodes)
    try:
        yield cluster
    finally:
        cluster.stop()
