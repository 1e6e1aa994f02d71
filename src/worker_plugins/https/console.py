"""The web console: three static files shipped in the package, served at ``/``.

No CDN (hosts are often offline), no inline script or style: the Content-Security-Policy
the guard puts on every response allows scripts, styles and connections from this origin
only. The files are read once, when the application is built, and served from memory.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

#: Files of ``static/`` by URL path, with their content types.
FILES = {
    "/": ("index.html", "text/html"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/style.css": ("style.css", "text/css"),
}


def _load(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def add_console(app: web.Application) -> None:
    """Serve the console's files on ``app`` (GET and HEAD)."""
    for path, (name, content_type) in FILES.items():
        body = _load(name)

        async def serve(
            request: web.Request, body: bytes = body, content_type: str = content_type
        ) -> web.Response:
            # Revalidated each time, so a server upgrade never leaves an old console running.
            return web.Response(
                body=body,
                content_type=content_type,
                charset="utf-8",
                headers={"Cache-Control": "no-cache"},
            )

        app.router.add_get(path, serve)
