"""Segment's and RudderStack's tracking pixels: a message in an image URL.

Mail clients load images but run no script, so an email open is recorded by an ``<img>``
whose URL carries the message: Segment's ``/v1/pixel/track?data=<base64 JSON>`` (base64 is
optional: ``?event=Email Opened&properties.subject=...&writeKey=...`` works too) and
RudderStack's ``/pixel/v1/track?writeKey=...&event=...&properties.x=...``, where dotted
names nest. The answer is always a 1x1 GIF, whatever happened (an image has no error
path); what was refused is on the dead-letter topic and in the metrics.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

# The smallest transparent GIF (43 bytes), the answer to every pixel request.
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
# Types a pixel may carry (Segment's pixel routes; RudderStack has track and page).
PIXEL_TYPES = ("track", "page", "identify", "group", "alias", "screen")


class PixelError(ValueError):
    """The pixel's query does not spell a message."""


def _decode_data(data: str) -> Any:
    text = data.strip()
    if not text.startswith("{"):
        padded = text + "=" * (-len(text) % 4)
        try:
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
            text = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise PixelError(f"data is neither base64 nor JSON: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PixelError(f"data is not JSON: {exc}") from None


def _nest(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Dotted query names as nested objects (``properties.subject`` -> properties.subject)."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        *parents, leaf = name.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return out


def pixel_message(query: Iterable[tuple[str, str]]) -> tuple[dict[str, Any], str | None]:
    """The message a pixel URL carries, and its write key.

    Raises:
        PixelError: ``data`` is there but is neither base64 JSON nor JSON.

    Example:
        >>> data = base64.b64encode(b'{"writeKey": "k", "event": "Email Opened"}').decode()
        >>> pixel_message([("data", data.rstrip("="))])
        ({'event': 'Email Opened'}, 'k')
        >>> pixel_message([("writeKey", "k"), ("event", "Opened"), ("properties.subject", "Hi")])
        ({'event': 'Opened', 'properties': {'subject': 'Hi'}}, 'k')
    """
    pairs = list(query)
    data = next((v for k, v in pairs if k == "data"), None)
    if data is not None:
        decoded = _decode_data(data)
        if not isinstance(decoded, dict):
            raise PixelError("data must be a JSON object")
        message: dict[str, Any] = decoded
    else:
        message = _nest((k, v) for k, v in pairs if k != "writeKey")
    key = message.pop("writeKey", None)
    if not isinstance(key, str):
        key = next((v for k, v in pairs if k == "writeKey"), None)
    return message, key
