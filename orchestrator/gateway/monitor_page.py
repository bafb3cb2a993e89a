"""The flow monitor: a web page of the gateway (`/monitor/`), plain files shipped in the package.

Its script reads the same API a client would, with the token the person gives it, so it can
do nothing its token could not. Nothing is loaded from elsewhere: the Content-Security-Policy
allows this origin only, which also keeps any saga data the page shows from running as script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

log = structlog.get_logger("sagawire.gateway")

MONITOR_FILES: Final = Path(__file__).resolve().parent / "monitor"
MONITOR_PATH: Final = "/monitor"
MONITOR_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated: a new gateway version shows at once
}


class MonitorFiles(StaticFiles):
    """The page's files, each with `MONITOR_HEADERS`."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(MONITOR_HEADERS)
        return response


def mount_monitor(app: FastAPI, files: Path = MONITOR_FILES) -> None:
    """`/` and `/monitor` lead to the page; `/monitor/` serves its files."""

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{MONITOR_PATH}/", status_code=307)

    if not (files / "index.html").is_file():
        # An install without the package data: the API works, the page answers why it cannot.
        log.warning("monitor_files_missing", folder=str(files))
        missing = f"the flow monitor's files are not installed with this gateway ({files})"

        @app.get(MONITOR_PATH + "/{_rest:path}", include_in_schema=False)
        async def no_monitor(_rest: str) -> JSONResponse:
            return JSONResponse({"detail": missing}, status_code=404)

        return
    app.mount(MONITOR_PATH, MonitorFiles(directory=files, html=True), name="monitor")
