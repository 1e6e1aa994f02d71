"""Job records as plain data (JSON-ready dicts) and back: one shape for every consumer.

The ``sqlite`` store keeps records in this shape, ``worker job get --json`` prints it and the
library's users may store it: numbers stay numbers, booleans booleans, enums their values,
times Unix seconds. Unknown keys are ignored when reading, so a record written by a newer
minor version still loads; a missing key takes the field's default.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import cattrs

from ._model import Job

_converter = cattrs.Converter()  # the project's strict converter is for config, not records
# Enums travel as their values; tuples as lists.
_converter.register_unstructure_hook(enum.Enum, lambda e: e.value)


def job_to_dict(job: Job) -> dict[str, Any]:
    """``job`` as JSON-ready data (``json.dumps`` takes it as is)."""
    data: dict[str, Any] = _converter.unstructure(job)
    data["facts"] = dict(job.facts)
    return data


def job_from_dict(data: Mapping[str, Any]) -> Job:
    """The record :func:`job_to_dict` made. Raises ``ValueError`` on data that is not one."""
    try:
        return _converter.structure(dict(data), Job)
    except (cattrs.BaseValidationError, TypeError, KeyError) as exc:
        raise ValueError(f"not a job record: {exc}") from exc
