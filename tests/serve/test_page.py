"""The search page and the API docs are served by the app from local files: no CDN, no key needed to load them.

No model is loaded here (the app's lifespan does not run): these routes need none.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve.app import create_app
from serve.page import install_page
from serve.settings import Settings

PAGES = ["/", "/docs", "/redoc"]


class _References(HTMLParser):
    """Every URL an HTML page loads or links to (src and href attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append((tag, value))


def references(html: str) -> list[tuple[str, str]]:
    parser = _References()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def page_client() -> TestClient:
    """The app with an API key, before its lifespan: the page's routes need no model."""
    return TestClient(create_app(Settings(api_key="s3cret")))


@pytest.mark.parametrize("path", PAGES)
def test_pages_load_only_local_files(page_client: TestClient, path: str) -> None:
    response = page_client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text
    # Whatever a bundled script might ask for, the browser loads from this server only.
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    loaded = [(tag, url) for tag, url in references(response.text) if tag in ("script", "link", "img")]
    assert loaded, "the page loads no script or style sheet"
    for tag, url in loaded:
        assert url.startswith("/static/"), f"<{tag}> loads {url} from elsewhere"
        asset = page_client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url


def test_docs_pages_use_the_packaged_swagger_ui_and_redoc(page_client: TestClient) -> None:
    docs = page_client.get("/docs").text
    assert "/static/docs/swagger-ui-bundle.js" in docs
    assert "/static/docs/swagger-ui.css" in docs
    assert "'/openapi.json'" in docs or '"/openapi.json"' in docs
    assert "/static/docs/redoc.standalone.js" in page_client.get("/redoc").text
    bundle = page_client.get("/static/docs/swagger-ui-bundle.js")
    assert "javascript" in bundle.headers["content-type"]
    assert b"SwaggerUIBundle" in bundle.content
    assert b"Redoc" in page_client.get("/static/docs/redoc.standalone.js").content
    assert page_client.get("/docs/oauth2-redirect").status_code == 200


def test_page_files_and_docs_need_no_key_while_the_api_does(page_client: TestClient) -> None:
    for path in [
        *PAGES,
        "/static/app.js",
        "/static/style.css",
        "/static/docs/swagger-ui.css",
        "/openapi.json",
    ]:
        assert page_client.get(path).status_code == 200, path
    assert page_client.get("/info").status_code == 401
    assert page_client.get("/static/missing.js").status_code == 404
    # An open prefix opens nothing else: a path that climbs out of /static/ is still the static mount's, and 404.
    for path in ("/static/..%2fpage.py", "/static/..%2f..%2finfo", "/static/%2e%2e/settings.py"):
        assert page_client.get(path).status_code == 404, path


def test_page_files_count_under_one_metrics_label(page_client: TestClient) -> None:
    for path in ("/static/app.js", "/static/style.css", "/static/docs/favicon.png"):
        page_client.get(path)
    lines = page_client.get("/metrics").text.splitlines()
    assert any(
        line.startswith('http_requests_total{method="GET",route="/static",status="200"}') for line in lines
    )
    assert not any('route="/static/' in line for line in lines)


def test_page_scripts_and_styles_name_no_outside_host(page_client: TestClient) -> None:
    for path in ("/static/app.js", "/static/style.css"):
        text = page_client.get(path).text
        assert "http://" not in text and "https://" not in text, path  # links come from the API's url fields


def test_page_routes_stay_out_of_the_api_schema(page_client: TestClient) -> None:
    paths = page_client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc", "/docs/oauth2-redirect"} & set(paths)


def test_install_page_refuses_an_app_with_fastapis_cdn_docs() -> None:
    with pytest.raises(ValueError, match="docs_url=None"):
        install_page(FastAPI())
