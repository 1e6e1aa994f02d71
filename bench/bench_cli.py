"""Start-up of the ``worker`` program, against ``python -c "import grpc"`` in the same run.

Each figure is the median wall time of a fresh process, as a user at a shell waits for it:

- ``worker --help``;
- ``worker job get ID``, the round trip to a real ``worker serve`` included (the server is
  started here on 127.0.0.1 with throwaway certificates; its start-up is not measured);
- ``worker run -- true``: an engine in the process, one job, its exit.

The floor is ``python -c "import grpc"`` with the same interpreter. Bytecode is compiled
once (into a directory of the benchmark's own) and reused, as on a user's machine. Rounds interleave the
four commands, so a change of load on the machine affects all of them alike; the ratios to
the floor are what the targets are on (2x, 2x and 2.5x), and ``--runs`` repeats the whole
measurement (the targets must hold in each run).

    .venv/bin/python bench/bench_cli.py [--runs 3] [--rounds 15]
    .venv/bin/python bench/bench_cli.py --compare-src /tmp/before/src   # an older tree's CLI

``--compare-src DIR`` measures the same commands with ``DIR`` first on ``PYTHONPATH`` (e.g.
``git archive HEAD src | tar -x -C /tmp/before``), for before/after figures in one run: its
commands take their turns in the same rounds, against the same floor, so a change of load
affects both trees alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Row, print_table
from grpc_harness import serve_process

PYTHON = sys.executable
WORKER = str(Path(sys.executable).with_name("worker"))
FLOOR = [PYTHON, "-c", "import grpc"]
#: Target on each command's ratio to the floor.
TARGETS = {"worker --help": 2.0, "worker job get ID": 2.0, "worker run -- true": 2.5}
#: Bound on any one command (a wedged server must not hang the benchmark).
COMMAND_TIMEOUT = 60.0


def timed(argv: Sequence[str], env: Mapping[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv,
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed


def measure(
    commands: Mapping[str, tuple[Sequence[str], Mapping[str, str]]],
    env: Mapping[str, str],
    rounds: int,
) -> dict[str, float]:
    """Median seconds of each command ``(argv, env)`` and of the floor, interleaved round by
    round."""
    samples: dict[str, list[float]] = {name: [] for name in ("floor", *commands)}
    timed(FLOOR, env)  # warm the page cache
    for argv, command_env in commands.values():
        timed(argv, command_env)
    for _ in range(rounds):
        samples["floor"].append(timed(FLOOR, env))
        for name, (argv, command_env) in commands.items():
            samples[name].append(timed(argv, command_env))
    return {name: statistics.median(values) for name, values in samples.items()}


def rows(label: str, medians: Mapping[str, float]) -> list[Row]:
    floor = medians["floor"]
    result = [Row(f"{label}python -c 'import grpc'", "ms", floor * 1000, None, None, "floor", None)]
    for name, target in TARGETS.items():
        ratio = medians[f"{label}{name}"] / floor
        result.append(
            Row(
                f"{label}{name}",
                "ms",
                medians[f"{label}{name}"] * 1000,
                floor * 1000,
                ratio,
                f"<= {target:g}x",
                ratio <= target,
            )
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="independent measurements")
    parser.add_argument("--rounds", type=int, default=15, help="samples per command per run")
    parser.add_argument("--compare-src", type=Path, help="also measure this tree's CLI")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="worker-bench-cli-") as tmp:
        directory = Path(tmp)
        # As on a user's machine, modules are compiled once and their bytecode reused (an
        # environment that turns bytecode off would time the compiler): into a directory
        # of the benchmark's own, so the source tree gets no __pycache__.
        base_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "GRPC_"))},
            "PYTHONPYCACHEPREFIX": str(directory / "pycache"),
        }
        base_env.pop("PYTHONDONTWRITEBYTECODE", None)
        with serve_process(directory / "server") as server:
            cert, key = server.pki.client("alice").write(directory, "alice")
            env = {
                **base_env,
                "WORKER_SERVER": f"127.0.0.1:{server.port}",
                "WORKER_CA": str(server.pki.ca_path),
                "WORKER_CERT": str(cert),
                "WORKER_KEY": str(key),
                "XDG_CONFIG_HOME": str(directory / "no-config"),
            }
            submitted = subprocess.run(
                [WORKER, "job", "submit", "--", "true"],
                env=env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=True,
            )
            job_id = submitted.stdout.strip()
            timed([WORKER, "job", "wait", job_id], env)  # a finished job: the same answer each time
            commands = {
                "worker --help": [WORKER, "--help"],
                "worker job get ID": [WORKER, "job", "get", job_id],
                "worker run -- true": [WORKER, "run", "--", "true"],
            }
            os.chdir(directory)  # worker run runs its job here
            measured = {name: (argv, env) for name, argv in commands.items()}
            if args.compare_src is not None:
                other = {**env, "PYTHONPATH": str(args.compare_src.resolve())}
                measured.update(
                    {f"compared: {name}": (argv, other) for name, argv in commands.items()}
                )
            failed = False
            for run in range(1, args.runs + 1):
                medians = measure(measured, env, args.rounds)
                table = rows("", medians)
                if args.compare_src is not None:
                    table += rows("compared: ", medians)
                print(f"\nrun {run} of {args.runs} ({args.rounds} rounds, medians)")
                print_table(table)
                failed |= any(row.passed is False for row in table if "compared" not in row.name)
    print("\nall targets met in every run" if not failed else "\nsome target missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
