"""The web UI: static files served by the server at `/`, using only the public HTTP API."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"


async def _index(request: object) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


def ui_routes() -> list[BaseRoute]:
    """Return the routes of the UI: the page at `/` and its files under `/ui/`."""
    return [
        Route("/", _index, methods=["GET"]),
        Mount("/ui", app=StaticFiles(directory=STATIC), name="ui"),
    ]
