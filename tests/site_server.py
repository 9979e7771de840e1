"""A local test site on loopback for the list pattern's tests, notebook and benchmark.

Pages (every request is recorded in ``site.hits``):

- ``/p{N}.html``: a plain page titled "Page N", two links (one internal, one external);
- ``/js{N}.html``: title and content set by JavaScript (a plain fetch sees "Loading...");
- ``/slow{N}.html?ms=M``: answers after M milliseconds (default 300);
- ``/together{N}.html?n=K``: answers once K such requests are in flight at once (or after
  60 s): pages that can only all finish quickly when they are fetched in parallel;
- ``/hang``: never answers (until the site stops);
- ``/status/404``, ``/status/500``: error pages with a title;
- ``/redirect/{N}``: a chain of N redirects ending at ``/p0.html``;
- ``/latin1.html``: a page in ISO-8859-1 ("Café crème"), declared in the header only.
"""
from __future__ import annotations

import http.server
import re
import threading
import time
from urllib.parse import parse_qs, urlsplit

PLAIN = ("<!doctype html><html><head><title>Page {n}</title>"
         "<meta name=\"description\" content=\"Description of page {n}\">"
         "<link rel=\"canonical\" href=\"/p{n}.html\"></head>"
         "<body><h1>Heading {n}</h1><p>Some words on page number {n}.</p>"
         "<a href=\"/p{next}.html\">next</a> <a href=\"https://example.com/\">out</a></body></html>")
SCRIPTED = ("<!doctype html><html><head><title>Loading...</title></head><body><h1 id=\"h\"></h1>"
            "<script>document.title = 'Rendered {n}';"
            "document.getElementById('h').textContent = 'Made by script {n}';"
            "const p = document.createElement('p'); p.textContent = 'one two three four five';"
            "document.body.appendChild(p);</script></body></html>")


class SiteHandler(http.server.BaseHTTPRequestHandler):
    site: "TestSite"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args):
        pass

    def send_page(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        self.site.hits.append(self.path)
        if m := re.fullmatch(r"/p(\d+)\.html", path):
            n = int(m[1])
            return self.send_page(200, PLAIN.format(n=n, next=n + 1).encode())
        if m := re.fullmatch(r"/js(\d+)\.html", path):
            return self.send_page(200, SCRIPTED.format(n=m[1]).encode())
        if m := re.fullmatch(r"/slow(\d+)\.html", path):
            time.sleep(int(query.get("ms", ["300"])[0]) / 1000)
            return self.send_page(200, f"<title>Slow {m[1]}</title><p>slow page</p>".encode())
        if m := re.fullmatch(r"/together(\d+)\.html", path):
            want = int(query.get("n", ["2"])[0])
            with self.site.lock:
                self.site.together += 1
                self.site.max_together = max(self.site.max_together, self.site.together)
                self.site.lock.notify_all()
                self.site.lock.wait_for(lambda: self.site.max_together >= want, timeout=60)
                self.site.together -= 1
            return self.send_page(200, f"<title>Together {m[1]}</title>".encode())
        if path == "/hang":
            self.site.stopping.wait(300)
            return None
        if m := re.fullmatch(r"/status/(\d{3})", path):
            code = int(m[1])
            return self.send_page(code, f"<title>Error {code}</title><p>status {code}</p>".encode())
        if m := re.fullmatch(r"/redirect/(\d+)", path):
            n = int(m[1])
            return self.send_page(302, b"", headers=[("Location", f"/redirect/{n - 1}" if n > 1 else "/p0.html")])
        if path == "/latin1.html":
            body = "<title>Café crème</title><p>Déjà vu à la carte</p>".encode("iso-8859-1")
            return self.send_page(200, body, "text/html; charset=iso-8859-1")
        return self.send_page(404, b"<title>Not found</title>")


class TestSite:
    """``with TestSite() as site:`` serves on 127.0.0.1 (a free port) in a thread."""

    __test__ = False  # not a pytest test class

    def __init__(self):
        self.hits: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Condition()
        self.together = self.max_together = 0
        handler = type("Handler", (SiteHandler,), {"site": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="test-site")

    def __enter__(self) -> "TestSite":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return self.base + path


if __name__ == "__main__":  # serve it by hand: python tests/site_server.py
    with TestSite() as site:
        print(site.base, flush=True)
        threading.Event().wait()
