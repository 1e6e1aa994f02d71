"""Page tokens for listing: opaque to callers, checked when they come back."""

from __future__ import annotations

import base64
import binascii

from ._errors import InvalidSpec

_PREFIX = "w1."


def encode_token(seq: int) -> str:
    """The token of the page that continues below record ``seq``."""
    raw = f"{seq}".encode()
    return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> int:
    """The sequence number a token continues below; InvalidSpec for anything else."""
    if not isinstance(token, str) or not token.startswith(_PREFIX) or len(token) > 64:
        raise InvalidSpec("page_token", "not a page token from this server")
    body = token[len(_PREFIX) :]
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        seq = int(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidSpec("page_token", "not a page token from this server") from None
    if seq < 0 or str(seq) != text:
        raise InvalidSpec("page_token", "not a page token from this server")
    return seq
