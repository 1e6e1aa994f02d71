"""The committed generated modules match what scripts/gen_proto makes from the proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "src/worker_plugins/grpc_transport"
FILES = ("worker_pb2.py", "worker_pb2_grpc.py", "worker_pb2.pyi", "worker_pb2_grpc.pyi")


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_proto"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    stale = [
        name for name in FILES if (tmp_path / name).read_bytes() != (COMMITTED / name).read_bytes()
    ]
    assert not stale, f"regenerate with scripts/gen_proto; stale: {stale}"


def test_generated_grpc_module_imports_relatively() -> None:
    text = (COMMITTED / "worker_pb2_grpc.py").read_text()
    assert "from worker.v1 import" not in text
    assert "from . import worker_pb2" in text
