"""Read the dashboard's form posts: URL-encoded, with the standard library.

Posts from other sites never get here: `api.app.SameSiteWrites` refuses every
write a browser says comes from another site, for the API and the dashboard alike.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response

from socmeth.ui import pages, session

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 200


async def read(
    request: Request, *, csrf: bool = True
) -> list[tuple[str, str]] | Response:
    """Return the posted inputs as (name, value) pairs in the order sent, or the
    error page of a post that is not a form or lacks its session's CSRF token
    (`csrf` false only for the login form, which comes before any session)."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    # A form without inputs may come with no body and no type, as from curl -X POST.
    if (body or content_type) and _media_type(content_type) != FORM_TYPE:
        shown = content_type or "none"
        message = f"A form post must be sent as {FORM_TYPE}, not {shown}"
        return pages.error_page(request, 415, message)
    try:
        pairs = parse_qsl(
            body.decode("utf-8", errors="replace"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
        )
    except ValueError:
        message = f"A form post may hold at most {MAX_FIELDS} inputs"
        return pages.error_page(request, 413, message)
    if csrf and not session.csrf_valid(request, pairs):
        message = (
            "This form's CSRF token is missing or not this session's: reload the "
            "page and send it again"
        )
        return pages.error_page(request, 403, message)
    return pairs


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()
