"""Reading what a ``worker serve`` process logged, for the operations tests."""

from __future__ import annotations

import json
from typing import Any


def json_records(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as a JSON object; fails on a line that is not one."""
    records = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"a line of the log is not JSON: {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def where(records: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    """The records whose fields have these values."""
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]
