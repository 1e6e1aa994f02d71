"""The aiohttp application: the API routes, the console, the guard around them all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .config import HttpsConfig
from .console import add_console
from .context import SERVER, ServerState, StreamSlots
from .guard import expect_continue, guard, security_headers
from .routes import ROUTES

if TYPE_CHECKING:
    from worker_core.plugin import Engine


def make_app(engine: Engine, config: HttpsConfig) -> web.Application:
    """The application serving ``engine`` with ``config``'s caps."""
    app = web.Application(middlewares=[guard], client_max_size=config.max_body_bytes)
    operations = {(route.method, route.path): route.operation_id for route in ROUTES}
    state = ServerState(engine, config, StreamSlots(config.max_streams_per_client), operations)
    app[SERVER] = state
    for route in ROUTES:
        app.router.add_route(
            route.method, route.path, route.handler, expect_handler=expect_continue
        )
    add_console(app)
    app.on_response_prepare.append(security_headers)
    return app
