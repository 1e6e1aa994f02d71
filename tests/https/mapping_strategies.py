"""Hypothesis strategies shared by the tests of the JSON mappings (``fast_json``, ``job_json``)."""

from __future__ import annotations

from hypothesis import strategies as st

#: Any code point a protobuf string can hold (surrogates cannot be encoded as UTF-8).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)

#: What a ``google.protobuf.Struct`` (a job's facts, a running job's usage) can be given.
STRUCT_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
