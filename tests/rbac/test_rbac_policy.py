"""Reading and validating an RBAC policy file: the exact message for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker_core import ConfigError, Principal
from worker_core._toml_errors import format_path
from worker_plugins.rbac.policy import Permission, Policy, load

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"
EXPECTED = "expected one of: purge:all, purge:own, read:all, read:own, stop:all, stop:own, submit"


def error_for(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value).replace(str(path), "policy.toml")


def test_the_example_policy_loads() -> None:
    policy = load(EXAMPLE)
    assert policy.permissions(Principal("admin")) == {
        Permission.SUBMIT,
        Permission.STOP_ALL,
        Permission.READ_ALL,
        Permission.PURGE_ALL,
    }
    for operator in ("operator", "alice", "bob"):
        assert policy.permissions(Principal(operator)) == {
            Permission.SUBMIT,
            Permission.STOP_OWN,
            Permission.READ_OWN,
            Permission.PURGE_OWN,
        }
    assert policy.permissions(Principal("viewer")) == {Permission.READ_ALL}
    assert policy.permissions(Principal("mallory")) == frozenset()


def test_quoted_names_and_empty_tables(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[roles.r]\npermissions = []\n[users]\n"carol@example.com" = ["r"]\n')
    assert load(path) == Policy({"carol@example.com": frozenset()})


def test_unknown_permission(tmp_path: Path) -> None:
    text = '[roles.operator]\npermissions = ["submit", "stopp"]\n[users]\n'
    assert error_for(tmp_path, text) == (
        f"policy.toml:2: roles.operator.permissions[1]: unknown permission 'stopp' ({EXPECTED})"
    )


def test_unknown_permission_in_a_multiline_array_points_at_its_line(tmp_path: Path) -> None:
    text = (
        '[roles.operator]\npermissions = [\n  "submit",\n  "stop:own",\n  "raed:own",\n]\n[users]\n'
    )
    assert error_for(tmp_path, text) == (
        f"policy.toml:5: roles.operator.permissions[2]: unknown permission 'raed:own' ({EXPECTED})"
    )


def test_unknown_role(tmp_path: Path) -> None:
    text = '[roles.operator]\npermissions = ["submit"]\n\n[users]\nalice = ["operator"]\nbob = ["opertor"]\n'
    assert error_for(tmp_path, text) == (
        "policy.toml:6: users.bob: unknown role 'opertor' (defined roles: operator)"
    )


def test_extra_key(tmp_path: Path) -> None:
    text = '[roles.viewer]\npermissions = ["read:all"]\ncolour = "blue"\n[users]\n'
    assert error_for(tmp_path, text) == (
        "policy.toml:3: roles.viewer.colour: unknown key 'colour' (expected: permissions)"
    )


def test_misspelt_table(tmp_path: Path) -> None:
    text = '[roles.viewer]\npermissions = ["read:all"]\n[user]\nvera = ["viewer"]\n'
    assert error_for(tmp_path, text).splitlines() == [
        "policy.toml: users: required key missing",
        "policy.toml:3: user: unknown key 'user' (expected: roles, users, revoked)",
    ]


def test_missing_permissions(tmp_path: Path) -> None:
    assert error_for(tmp_path, "[roles.viewer]\n[users]\n") == (
        "policy.toml:1: roles.viewer.permissions: required key missing"
    )


def test_a_string_where_a_list_belongs(tmp_path: Path) -> None:
    # cattrs would make "viewer" the roles v, i, e, w, e, r: refused with the right form.
    text = '[roles.viewer]\npermissions = ["read:all"]\n[users]\n"vera@example.com" = "viewer"\n'
    assert error_for(tmp_path, text) == (
        'policy.toml:4: users."vera@example.com": must be a list, e.g. ["operator"], '
        "got str 'viewer'"
    )


def test_wrong_types(tmp_path: Path) -> None:
    assert error_for(tmp_path, "roles = 5\n[users]\nbob = [1]\n").splitlines() == [
        "policy.toml:1: roles: expected a mapping",
        "policy.toml:3: users.bob[0]: expected str, got int 1",
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        '[roles.a]\npermissions = ["submit", "x"]\n'
        '[roles.b]\npermissions = ["y"]\n'
        '[users]\nbob = ["a"]\n'
    )
    assert error_for(tmp_path, text).splitlines() == [
        f"policy.toml:2: roles.a.permissions[1]: unknown permission 'x' ({EXPECTED})",
        f"policy.toml:4: roles.b.permissions[0]: unknown permission 'y' ({EXPECTED})",
    ]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        f'{path}: no such policy file (set [plugins.rbac] policy = "..."; a relative path is '
        f"relative to the current directory, {Path.cwd()})"
    )


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the policy file: Is a directory"):
        load(tmp_path)


def test_bad_toml(tmp_path: Path) -> None:
    message = error_for(tmp_path, '[roles.a]\npermissions = ["submit",\n[users]\n')
    # tomllib's own wording varies between Python versions; the file and the line do not.
    assert message.startswith("policy.toml: invalid TOML: ")
    assert message.endswith("(at line 3, column 2)")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(b"[users]\nb\xff = []\n")
    with pytest.raises(ConfigError, match=r"policy\.toml: the policy file is not UTF-8 text"):
        load(path)


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        (("users", "bob"), "users.bob"),
        (("users", "carol@example.com"), 'users."carol@example.com"'),
        (("roles", "op", "permissions", 3), "roles.op.permissions[3]"),
        ((), "(top level)"),
    ],
)
def test_paths_are_written_the_way_toml_writes_them(
    path: tuple[str | int, ...], rendered: str
) -> None:
    assert format_path(path) == rendered


def test_the_example_server_config_points_at_the_example_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from worker_core import Config
    from worker_plugins.rbac.plugin import RbacPlugin

    # Its paths are relative to the config file, wherever the server is started from.
    monkeypatch.chdir(tmp_path)
    config = Config.load(EXAMPLE.parent / "server.toml")
    plugin = RbacPlugin()
    plugin.configure(config)
    assert plugin.policy == load(EXAMPLE)
    grpc = config.plugins["grpc"]
    for key in ("ca", "cert", "key"):
        assert config.resolve_path(grpc[key]).is_file(), grpc[key]
