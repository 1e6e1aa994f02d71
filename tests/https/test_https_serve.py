"""``worker serve --plugins https``: its configuration mistakes are one line and exit 1; it
serves alone with ``no:grpc``; the console's files and the OpenAPI document match the code."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path

import pytest
from https_harness import (
    HttpsServer,
    curl_stream,
    https_serve,
    parse_events,
    shell,
    spawn_https,
    stop_serve,
)

from worker_plugins.https.app import make_app
from worker_plugins.https.config import HttpsConfig
from worker_plugins.https.routes import ROUTES

EXIT_TIMEOUT = 60


def _fails(directory: Path, **https: object) -> str:
    """Start serve with these ``[plugins.https]`` settings; its error output (it must fail)."""
    _, launched = spawn_https(directory, https=https)
    try:
        assert launched.process.wait(EXIT_TIMEOUT) == 1, launched.stderr
    finally:
        stop_serve(launched)
    return str(launched.stderr)


def test_configuration_mistakes_are_one_line(tmp_path: Path) -> None:
    cases: dict[str, tuple[dict[str, object], str]] = {
        "min_tls": ({"min_tls": "1.1"}, "min_tls must be one of 1.3, 1.2, got '1.1'"),
        "listen": ({"listen": "nowhere"}, "plugins.https.listen"),
        "cap": ({"max_body_bytes": 0}, "max_body_bytes must be >= 1"),
        "cert": ({"cert": str(tmp_path / "missing.pem")}, "does not exist"),
        "key": ({"key": "/etc/hostname"}, "holds no unencrypted PEM private key"),
    }
    for name, (settings, expected) in cases.items():
        stderr = _fails(tmp_path / name, **settings)
        assert expected in stderr, (name, stderr)
        assert "Traceback" not in stderr, stderr


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stderr = _fails(tmp_path, listen=f"127.0.0.1:{port}")
    assert f"https: cannot listen on 127.0.0.1:{port}: the address is already in use" in stderr


def test_https_alone_with_no_grpc(tmp_path: Path) -> None:
    with https_serve(tmp_path, plugins="https,rbac,no:grpc") as server:
        assert "(grpc)" not in server.stderr
        assert server.call("alice", "GET", "/v1/me").json() == {"name": "alice"}


@pytest.fixture
def app_routes() -> set[tuple[str, str]]:
    app = make_app(engine=None, config=HttpsConfig())  # type: ignore[arg-type]  # routes only
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def test_the_openapi_document_describes_every_route(
    server: HttpsServer, app_routes: set[tuple[str, str]]
) -> None:
    reply = server.call("viewer", "GET", "/v1/openapi.json")
    assert reply.status == 200
    document = reply.json()
    assert document["openapi"].startswith("3.")
    described = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    api_routes = {(method, path) for method, path in app_routes if path.startswith("/v1/")}
    assert described == api_routes
    # Every reference resolves, and every message schema has every field of the proto.
    schemas = document["components"]["schemas"]

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        assert ref.split("/")[-1] in schemas, ref
    for route in ROUTES:
        for message in (route.body, route.response):
            if message is None:
                continue
            properties = schemas[message.DESCRIPTOR.name]["properties"]
            assert set(properties) == {f.json_name for f in message.DESCRIPTOR.fields}
    job = schemas["Job"]["properties"]
    assert job["state"] == {"$ref": "#/components/schemas/JobState"}
    assert "JOB_STATE_RUNNING" in schemas["JobState"]["enum"]


def test_every_described_operation_is_served(server: HttpsServer) -> None:
    """Each documented operation answers (an error about the job, never 404/405 routing)."""
    document = server.call("viewer", "GET", "/v1/openapi.json").json()
    job = server.submit("alice", {"command": "/bin/true"}, waitSeconds=20)
    for path, operations in document["paths"].items():
        for method in operations:
            concrete = path.replace("{job_id}", job["id"])
            reply = server.call("admin", method.upper(), concrete)
            assert reply.status != 405, (method, path, reply)
            if reply.status == 404:
                assert "no such route" not in reply.json()["message"], (method, path)


def test_the_console_is_served_with_a_strict_policy(server: HttpsServer) -> None:
    page = server.curl("alice", "/")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    html = page.body.decode()
    assert "<script>" not in html and "style=" not in html and "onclick" not in html
    assert "http://" not in html and "https://" not in html  # no CDN
    for asset, kind in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        reply = server.curl("alice", asset)
        assert reply.status == 200 and reply.headers["content-type"].startswith(kind)
        assert b"https://" not in reply.body and b"http://" not in reply.body
    assert server.curl("alice", "/static/../plugin.py").status == 404


def test_api_calls_are_counted_by_the_metrics_plugin(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port for /metrics
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sections = {"plugins.metrics": {"listen": f"127.0.0.1:{port}"}}
    with https_serve(tmp_path, plugins="https,rbac,metrics", sections=sections) as server:
        server.submit("alice", {"command": "/bin/true"}, waitSeconds=20)
        assert server.call("alice", "GET", "/v1/jobs/" + "0" * 32).status == 404
        assert server.call("alice", "GET", "/v1/jobs/" + "0" * 32 + "/nothing").status == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as answer:
            text = answer.read().decode()
    assert re.search(r'worker_rpc_duration_seconds_count\{code="OK",method="Submit"\} 1\.0', text)
    assert re.search(
        r'worker_rpc_duration_seconds_count\{code="NOT_FOUND",method="Get"\} 1\.0', text
    )
    # Labels come from the route table: an unknown path is not a series.
    assert "nothing" not in text


def test_sigterm_ends_open_streams_cleanly(tmp_path: Path) -> None:
    """On SIGTERM serve stops every job first: a follower reads the job's last output and
    its stream ends normally (curl exits 0), then the transport stops and serve exits 0."""
    with https_serve(tmp_path) as server:
        job = server.submit("alice", shell("i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done"))
        with (
            curl_stream(server, "alice", f"/v1/jobs/{job['id']}/output?follow=true") as raw,
            curl_stream(
                server,
                "alice",
                f"/v1/jobs/{job['id']}/events",
                headers=["Accept: text/event-stream"],
            ) as events,
        ):
            raw.wait_for(lambda got: b"\n3\n" in got)
            server.launched.process.terminate()
            numbers = [int(n) for n in raw.finish().split()]
            assert numbers == list(range(len(numbers)))
            last = parse_events(events.finish().decode())
        assert server.launched.process.wait(EXIT_TIMEOUT) == 0
    assert last[-1]["event"] == "end"
    final = [e for e in last if e["event"] == "job"][-1]
    assert '"END_REASON_SHUTDOWN"' in final["data"]
