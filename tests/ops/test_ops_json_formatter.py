"""The JSON-lines formatter plugins and hosts can use: one object per record, one line each,
with the ``extra`` fields as keys."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker_core._logs import configure_logging
from worker_core.plugin import JsonLinesFormatter, json_lines_logging


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLinesFormatter())
    log = logging.getLogger("worker.test-json-lines")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield log, stream
    finally:
        log.removeHandler(handler)
        log.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_object_with_its_extra_fields(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    log.info("job %s ended", "abc", extra={"job": "abc", "exit_code": 3, "when": object})
    [record] = lines(stream)
    assert record["level"] == "INFO"
    assert record["logger"] == "worker.test-json-lines"
    assert record["message"] == "job abc ended"
    assert (record["job"], record["exit_code"]) == ("abc", 3)
    assert record["when"] == str(object)  # not JSON: written as its str()
    assert str(record["time"]).endswith("+00:00")
    assert "args" not in record and "msg" not in record and "levelno" not in record


def test_newlines_and_other_characters_never_break_the_line(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    log.warning("two\nlines and \u00e9 and \udcff", extra={"field": "a\nb"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    assert text.isascii()
    first, second = lines(stream)
    assert first["message"] == "two\nlines and \u00e9 and \udcff"
    assert first["field"] == "a\nb"
    assert second["level"] == "ERROR"
    assert "ValueError: boom" in str(second["exc"])


def test_a_field_cannot_replace_the_four_fixed_keys(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    log.info("real", extra={"level": "FAKE", "logger": "fake", "time": "never"})
    [record] = lines(stream)
    assert (record["level"], record["logger"]) == ("INFO", "worker.test-json-lines")
    assert record["time"] != "never"


@contextlib.contextmanager
def bare_root_logger() -> Iterator[logging.Logger]:
    """The root logger without its handlers (pytest's among them) until the block ends."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    for handler in saved:
        root.removeHandler(handler)
    try:
        yield root
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)


def test_configure_logging_picks_the_format_and_leaves_a_configured_root_alone() -> None:
    with bare_root_logger() as root:
        configure_logging(1, "json")
        assert json_lines_logging()
        assert root.level == logging.INFO
        configure_logging(0, "text")  # root has a handler now: nothing changes
        assert json_lines_logging()
    with bare_root_logger() as root:
        configure_logging(2, "text")
        assert not json_lines_logging()
        assert root.level == logging.DEBUG
    with pytest.raises(ValueError, match="log format must be one of text, json, got 'xml'"):
        configure_logging(0, "xml")
