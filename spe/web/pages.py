"""The web pages' shell, shared by the catalogue, query, jobs, federated runs, permit and
airlock pages.

Each page is a static HTML file whose vanilla JS calls the JSON API: no templating engine
and no build step, so the pages work offline and read as they are. The server only fills
in the path prefix the app is mounted under (`%ROOT%`), so the pages' absolute links still
work behind a proxy that sets `root_path`. Nothing from the database is rendered here: the
browser fetches it and the JS writes it as text, never as HTML.

The CSS and JS every page shares are in STATIC_DIR, which spe/app.py mounts at STATIC_PATH.

Every page gets one navigation (NAV, put where the page writes `<!-- spe:nav -->`, else
first in its <body>): a link to each page, each with a stable `data-nav`, and nav.js, which
shows who is signed in in this tab and, per role, what waits for them (`data-waiting`).
"""

from __future__ import annotations

import html
import re
import secrets
from functools import cache
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where spe/app.py mounts STATIC_DIR (each page's <head> loads common.css and common.js).
STATIC_PATH = "/static/common"

# Same-origin everything: the pages load only this service's CSS/JS and talk only to its
# API, so a token pasted into one can only ever be sent back to this origin.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


#: The links of every page's navigation: (data-nav, path, label). /docs only where the
#: app serves it (not in production: spe/web/docs.py).
LINKS = (
    ("home", "/", "Home"),
    ("catalogue", "/catalogue", "Catalogue"),
    ("query", "/query", "Federated query"),
    ("permits", "/permits", "Permits"),
    ("permit-new", "/permits/new", "Apply for a permit"),
    ("jobs", "/jobs", "Jobs"),
    ("fed", "/fed", "Federated runs"),
    ("airlock", "/airlock", "Airlock review"),
    ("code-reviews", "/code-reviews", "Code review"),
    ("docs", "/docs", "API docs"),
)
_PLACEHOLDER = "<!-- spe:nav -->"
_HEAD = (f'  <link rel="stylesheet" href="%ROOT%{STATIC_PATH}/nav.css">\n'
         f'  <script src="%ROOT%{STATIC_PATH}/nav.js" defer></script>\n')


def _nav(docs: bool) -> str:
    links = "\n".join(
        f'    <a href="%ROOT%{path}" data-nav="{name}">{label}</a>'
        for name, path, label in LINKS if docs or name != "docs")
    return f"""<nav class="spe-nav" aria-label="Site" data-testid="site-nav">
  <div class="spe-nav-links">
{links}
  </div>
  <div class="spe-nav-status">
    <span class="spe-nav-who" data-testid="nav-who">Not signed in</span>
    <span class="spe-nav-waiting" data-testid="nav-waiting" aria-live="polite"></span>
  </div>
</nav>
"""


#: What a page shows only where the API docs are served (the home page's link to them).
_DOCS_ONLY = re.compile(r"<!-- spe:docs -->.*?<!-- /spe:docs -->\n?", re.S)


@cache
def _shell(path: Path, nav: bool, docs: bool) -> str:
    page = path.read_text(encoding="utf-8")
    if not docs:
        page = _DOCS_ONLY.sub("", page)
    if not nav:
        return page
    page = page.replace("</head>", _HEAD + "</head>", 1)
    if _PLACEHOLDER in page:
        return page.replace(_PLACEHOLDER, _nav(docs), 1)
    # After the page's "skip to the content" link, so that it stays the first to tab to.
    return re.sub(r'(<body[^>]*>\s*(?:<a class="skip"[^>]*>[^<]*</a>\n)?)',
                  lambda m: m.group(1) + _nav(docs), page, count=1)


def shell_page(request: Request, path: Path, *, nav: bool = True,
               style_nonce: bool = False) -> HTMLResponse:
    """The HTML file at `path`, its `%ROOT%` the prefix the app is mounted under, with
    the shared navigation unless `nav` is false (a node's API docs: it has no pages).

    `style_nonce`: a fresh nonce in `%STYLE_NONCE%` that the CSP allows <style> elements
    to carry, for a bundle that writes its CSS at run time (ReDoc's styled-components).
    Scripts stay 'self' only."""
    root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    docs = getattr(request.app, "openapi_url", None) is not None
    page = _shell(path, nav, docs).replace("%ROOT%", root)
    headers = _HEADERS
    if style_nonce:
        nonce = secrets.token_urlsafe(18)
        page = page.replace("%STYLE_NONCE%", nonce)
        headers = {**_HEADERS, "Content-Security-Policy": _CSP.replace(
            "style-src 'self'", f"style-src 'self' 'nonce-{nonce}'")}
    return HTMLResponse(page, headers=headers)


__all__ = ["LINKS", "STATIC_DIR", "STATIC_PATH", "shell_page"]
