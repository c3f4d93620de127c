"""A request's JSON body, as the secrets engine takes it: a JSON object or nothing.

Its size is bounded by the app's `client_max_size` (aiohttp answers 413). Each API
words the 400 its own way; its error middleware writes the envelope.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from stack.errors import BadRequest


async def json_object(
    request: web.Request, *, not_json: str, not_object: str
) -> dict[str, Any] | None:
    """The body's object; None for no body or only white space. BadRequest with
    `not_json` for a body that does not parse, `not_object` for any other value."""
    if not request.can_read_body:
        return None
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest(not_json) from None
    if not isinstance(body, dict):
        raise BadRequest(not_object)
    return body
