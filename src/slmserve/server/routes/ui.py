"""The web pages: the chat at /ui and the live dashboard at /ui/dashboard. Static files, no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/ui", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "ui.html")


@router.get("/ui/dashboard", include_in_schema=False)
async def dashboard() -> FileResponse:
    """Charts of /metrics, polled by the page itself every second."""
    return FileResponse(STATIC / "dashboard.html")


def mount_static(app: FastAPI) -> None:
    """Serve the pages' files."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
