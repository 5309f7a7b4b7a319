"""The web pages: the chat at /ui, the live dashboard at /ui/dashboard, the API docs at /docs and /redoc. Static
files, no build step, nothing from the internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from slmserve.server.strict_json import StrictJSONRoute

STATIC = Path(__file__).resolve().parent.parent / "static"
VENDOR = "/ui/static/vendor"

router = APIRouter(route_class=StrictJSONRoute)  # errors in FastAPI's {"detail"} shape, as the seeds'


@router.get("/ui", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "ui.html")


@router.get("/ui/dashboard", include_in_schema=False)
async def dashboard() -> FileResponse:
    """Charts of /metrics, polled by the page itself every second."""
    return FileResponse(STATIC / "dashboard.html")


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    """FastAPI's Swagger UI page, its assets served from the package (vendor/README.md), not a CDN."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="slmserve API",
        swagger_js_url=f"{VENDOR}/swagger-ui-bundle.js",
        swagger_css_url=f"{VENDOR}/swagger-ui.css",
        swagger_favicon_url="/favicon.ico",
    )


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title="slmserve API",
        redoc_js_url=f"{VENDOR}/redoc.standalone.js",
        redoc_favicon_url="/favicon.ico",
        with_google_fonts=False,
    )


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """Browsers ask for it on every page; an SVG, which they take under this name too."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


def mount_static(app: FastAPI) -> None:
    """Serve the pages' files."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
