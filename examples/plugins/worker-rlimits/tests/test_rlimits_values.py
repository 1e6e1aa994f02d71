"""The value syntax and the host checks, without running jobs."""

from __future__ import annotations

import pytest
from worker_rlimits.plugin import HostLimits
from worker_rlimits.values import (
    RESOURCES,
    UNLIMITED,
    format_limit,
    parse_limit,
    stricter,
)

NOFILE, CORE, CPU = RESOURCES["nofile"], RESOURCES["core"], RESOURCES["cpu"]


@pytest.mark.parametrize(
    ("resource", "text", "expected"),
    [
        (NOFILE, "1024", (1024, 1024)),
        (NOFILE, " 1024 : 4096 ", (1024, 4096)),
        (NOFILE, "unlimited", (UNLIMITED, UNLIMITED)),
        (NOFILE, "64:infinity", (64, UNLIMITED)),
        (CORE, "0", (0, 0)),
        (CORE, "512k", (512 << 10, 512 << 10)),
        (CORE, "1M:2G", (1 << 20, 2 << 30)),
        (CPU, "60:65", (60, 65)),
    ],
)
def test_parse_limit_accepts(resource, text, expected):
    assert parse_limit(resource, text) == expected


@pytest.mark.parametrize(
    ("resource", "text", "problem"),
    [
        (NOFILE, "", "not a count amount"),
        (NOFILE, "lots", "not a count amount"),
        (NOFILE, "-1", "not a count amount"),
        (NOFILE, "1.5", "not a count amount"),
        (NOFILE, "10:5", "soft limit (10) is above the hard limit (5)"),
        (NOFILE, "unlimited:5", "above the hard limit"),
        (NOFILE, "1K", "size suffixes are for byte amounts"),
        (CPU, "0", "must be at least 1"),
        (CORE, "1P", "not a bytes amount"),
        (CORE, "99999999T", "too large"),
        (NOFILE, "1:2:3", "not a count amount"),
    ],
)
def test_parse_limit_refuses(resource, text, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_limit(resource, text)


def test_stricter_takes_the_lower_of_each_limit():
    assert stricter((10, 100), (50, 60)) == (10, 60)
    assert stricter((UNLIMITED, UNLIMITED), (5, 10)) == (5, 10)
    assert stricter((5, UNLIMITED), (UNLIMITED, 10)) == (5, 10)


def test_format_limit_round_trips():
    for text in ("1024", "1:2", "unlimited", "5:unlimited"):
        assert format_limit(parse_limit(NOFILE, text)) == text


def test_host_refuses_raising_a_hard_limit_without_cap_sys_resource():
    own = dict.fromkeys(RESOURCES, 100)
    host = HostLimits(can_raise_hard=False, nr_open=1000, own_hard=own)
    assert host.problem(NOFILE, (50, 100)) is None
    assert "CAP_SYS_RESOURCE" in str(host.problem(NOFILE, (50, 101)))
    assert "CAP_SYS_RESOURCE" in str(host.problem(CORE, (0, UNLIMITED)))
    privileged = HostLimits(can_raise_hard=True, nr_open=1000, own_hard=own)
    assert privileged.problem(NOFILE, (50, 1000)) is None
    assert "fs.nr_open" in str(privileged.problem(NOFILE, (50, 1001)))
