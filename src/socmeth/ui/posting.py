"""Read the dashboard's form posts: URL-encoded, with the standard library.

Posts from other sites never get here: `api.app.SameSiteWrites` refuses every
write a browser says comes from another site, for the API and the dashboard alike.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response

from socmeth.ui import pages

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 200


async def read(request: Request) -> list[tuple[str, str]] | Response:
    """Return the posted inputs as (name, value) pairs in the order sent, or the
    error page of a post that is not a form."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    # A form without inputs may come with no body and no type, as from curl -X POST.
    if (body or content_type) and _media_type(content_type) != FORM_TYPE:
        shown = content_type or "none"
        message = f"A form post must be sent as {FORM_TYPE}, not {shown}"
        return pages.error_page(request, 415, message)
    try:
        return parse_qsl(
            body.decode("utf-8", errors="replace"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
        )
    except ValueError:
        message = f"A form post may hold at most {MAX_FIELDS} inputs"
        return pages.error_page(request, 413, message)


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()
