"""The search page at ``/`` and the API docs at ``/docs`` and ``/redoc``, every file served by the app itself.

``install_page(app)`` mounts the page's files (``serve/static``: index.html, app.js, style.css; plain HTML, CSS
and JavaScript, no build step) at ``/static`` and the Swagger UI and ReDoc bundles that the ``fastapi-offline``
package ships at ``/static/docs``, so nothing is loaded from a CDN. The app is built with ``docs_url=None`` and
``redoc_url=None``: FastAPI's own docs pages would load their scripts from a CDN.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
# swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png, as the package ships them
DOCS_ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
STATIC_URL = "/static"
DOCS_ASSETS_URL = "/static/docs"
# Everything from this server: ReDoc's sidebar logo (from its CDN) is refused and hides itself, and any other
# outside request fails visibly in the browser's console rather than going out. Swagger UI and ReDoc need
# their inline script and styles, data: images and a blob: worker; the search page needs none of these.
DOCS_POLICY = "default-src 'self' 'unsafe-inline' data: blob:; frame-ancestors 'self'"
PAGE_POLICY = "default-src 'self'; frame-ancestors 'self'"


def install_page(app: FastAPI) -> None:
    """Add ``/`` (the search page), ``/static/*``, ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc`` to ``app``."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("build the app with docs_url=None and redoc_url=None: install_page serves both")
    # The more specific mount first: Starlette takes the first that matches.
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/", include_in_schema=False)
    async def search_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + oauth2_redirect_url,
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            # No badge from the online validator (swagger.io), which Swagger UI shows for a non-local server.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )
        page.headers["Content-Security-Policy"] = DOCS_POLICY
        return page

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_POLICY
        return page
