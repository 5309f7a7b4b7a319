"""The web chat page at /ui: static files shipped in the package, no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/ui", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "ui.html")


def mount_static(app) -> None:
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
