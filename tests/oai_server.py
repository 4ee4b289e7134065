"""A scripted OAI-PMH server on loopback for the harvester's tests: real HTTP, handwritten pages."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
    "<responseDate>2024-02-01T00:00:00Z</responseDate>\n"
    '<request verb="ListRecords">http://localhost/oai</request>\n'
)


def record(
    paper_id: str, title: str, categories: str, updated: str | None = "2024-01-10", set_spec: str = "cs"
) -> str:
    """One ``<record>`` in the arXiv metadata format, one author, an abstract with a line break."""
    updated_el = f"<updated>{updated}</updated>" if updated else ""
    return f"""<record><header><identifier>oai:arXiv.org:{paper_id}</identifier>
<datestamp>2024-01-15</datestamp><setSpec>{set_spec}</setSpec></header>
<metadata><arXiv xmlns="http://arxiv.org/OAI/arXiv/">
<id>{paper_id}</id><created>2024-01-02</created>{updated_el}
<authors><author><keyname>Lovelace</keyname><forenames>Ada</forenames></author></authors>
<title>{title}</title><categories>{categories}</categories>
<abstract>  Abstract of {paper_id},
on two lines.
</abstract></arXiv></metadata></record>
"""


def deleted(paper_id: str) -> str:
    return (
        f'<record><header status="deleted"><identifier>oai:arXiv.org:{paper_id}</identifier>'
        "<datestamp>2024-01-20</datestamp><setSpec>cs</setSpec></header></record>\n"
    )


def page(records: list[str], token: str | None, cursor: int = 0, size: int | None = None) -> bytes:
    """A ListRecords page; ``token=None`` ends the list with an empty resumptionToken, as arXiv does."""
    size_attr = f' completeListSize="{size}"' if size is not None else ""
    token_el = f'<resumptionToken cursor="{cursor}"{size_attr}>{token or ""}</resumptionToken>'
    return (HEAD + "<ListRecords>\n" + "".join(records) + token_el + "</ListRecords></OAI-PMH>\n").encode()


def oai_error(code: str, message: str) -> bytes:
    return (HEAD + f'<error code="{code}">{message}</error></OAI-PMH>\n').encode()


Response = tuple[int, dict[str, str], bytes]


@dataclass
class Script:
    """Pages by request key (``set=<spec>`` for a first request, ``token=<token>`` after), and failures to
    serve before them (consumed once each). ``hold`` keys block until ``release`` is set."""

    pages: dict[str, bytes]
    failures: dict[str, list[Response]] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)
    requests: list[dict[str, str]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def respond(self, query: dict[str, str]) -> Response:
        self.requests.append(query)
        key = f"token={query['resumptionToken']}" if "resumptionToken" in query else f"set={query.get('set')}"
        if key in self.hold:
            self.arrived.set()
            self.release.wait(timeout=30)
        if self.failures.get(key):
            return self.failures[key].pop(0)
        if key not in self.pages:
            return 200, {}, oai_error("badResumptionToken", f"unknown request {key}")
        return 200, {"Content-Type": "text/xml; charset=utf-8"}, self.pages[key]


@contextmanager
def serve(script: Script) -> Iterator[str]:
    """Run ``script`` on a free loopback port; yield the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            status, headers, body = script.respond(query)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:  # a larger one given by the script: a body cut off
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oai"
    finally:
        script.release.set()
        server.shutdown()
        server.server_close()
