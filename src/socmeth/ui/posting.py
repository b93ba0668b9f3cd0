"""Accept the dashboard's form posts: same-site only, URL-encoded, read with the
standard library.

A form post is a "simple" request that any web page can make a browser send, so a
post that a browser says comes from another site is refused (403) before it
changes anything: by `Sec-Fetch-Site` when the browser sends it, else by comparing
`Origin` with the request's own host. Clients that send neither (curl, scripts)
are not browsers and cannot be made to post by a page; the API is theirs anyway.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from fastapi import Request
from fastapi.responses import Response

from socmeth.ui import pages

FORM_TYPE = "application/x-www-form-urlencoded"
SAME_SITE = frozenset({"same-origin", "none"})
MAX_FIELDS = 200


async def read(request: Request) -> list[tuple[str, str]] | Response:
    """Return the posted inputs as (name, value) pairs in the order sent, or the
    error page of a post that must not be taken."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None and site not in SAME_SITE:
        return _cross_site(request, f"Sec-Fetch-Site says {site!r}")
    if site is None and origin is not None and not _same_host(origin, request):
        return _cross_site(request, f"it comes from {origin!r}")
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


def _same_host(origin: str, request: Request) -> bool:
    host = request.headers.get("host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def _cross_site(request: Request, why: str) -> Response:
    return pages.error_page(
        request,
        403,
        f"This form post was refused because {why}: the dashboard takes form "
        "posts from its own pages only",
    )
