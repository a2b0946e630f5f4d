"""`trainctl ui`: a small threaded HTTP server over one home folder (Python's http.server; no
torch, no build step).

Pages are static HTML + JavaScript shipped in cli/web/static/ (uPlot vendored, nothing fetched from
the internet); they read the JSON endpoints of cli/web/api.py.

Security:
  * it listens on 127.0.0.1 unless told otherwise; another host needs an access token (--token, or
    one is generated and printed), carried by every request: `?token=` once (a page then redirects
    to its address without it, the token kept in a same-site HttpOnly cookie) or an `Authorization:
    Bearer` header;
  * on loopback the Host header must name loopback, so a web page cannot reach it through DNS
    rebinding;
  * writes (resolving a flag, adding notes) need the per-session write token the pages get from
    /api/session (a cross-site page can neither read it nor send the custom header without the
    browser asking first), and a same-origin Origin header when the browser sends one;
  * static files and every name in a URL are looked up, never joined into a path;
  * the pages put data text into the page as text (textContent), never as HTML.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
import signal
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from cli.web import api
from daemon.errors import TrainctlError
from daemon.home import Home

STATIC = Path(__file__).parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
JOB_PAGE = re.compile(r"/jobs/[0-9]{1,9}")
COOKIE = "trainctl_token"
"""Where the access token is kept once a page was opened with ?token=."""
PAGES = {
    "/": ("Monitor", "monitor"),
    "/flags": ("Flagged examples", "flags"),
    "/compare": ("Compare runs", "compare"),
    "/evolution": ("Evolution", "evolution"),
    "/rejected": ("Rejections", "rejected"),
    "/jobs/": ("Job", "job"),
}
"""URL -> (title, its script in static/): every page is static/page.html around its own script.
Static assets are whatever files cli/web/static holds, by exact name (see `_static`)."""


def page_html(path: str) -> bytes:
    title, script = PAGES[path]
    return (
        (STATIC / "page.html")
        .read_text()
        .replace("{title}", title)
        .replace("{script}", script)
        .encode()
    )


def _static() -> dict[str, Path]:
    return {f"/static/{p.name}": p for p in STATIC.iterdir() if p.is_file() and p.suffix in _TYPES}


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class UIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, home: Home, host: str, port: int, token: str | None):
        self.home = home
        self.access_token = token
        """Required on every request when set (any host but loopback)."""
        self.write_token = secrets.token_urlsafe(24)
        """Required (X-Trainctl-Write header) on every write; handed to the pages by
        /api/session."""
        self.static = _static()
        self.loopback = is_loopback(host)
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return (
            f"http://{host!s}:{port}/"
            if isinstance(host, str)
            else f"http://{host.decode()}:{port}/"
        )


_GET: dict[str, Callable[[Home, dict[str, str]], Any]] = {
    "/api/status": lambda h, p: api.status(h),
    "/api/queue": api.queue,
    "/api/metrics": api.metrics,
    "/api/alerts": api.alerts,
    "/api/job": api.job,
    "/api/overlay": api.overlay,
    "/api/flags": api.flags,
    "/api/bench/runs": lambda h, p: api.bench_runs(h),
    "/api/bench/compare": api.bench_compare,
    "/api/evolution": api.evolution,
    "/api/evolution/example": api.evolution_example,
    "/api/datasets": lambda h, p: api.datasets(h),
    "/api/rejected": api.rejected,
}


class Handler(BaseHTTPRequestHandler):
    server: UIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass  # quiet: a page polls every 2 s

    # -- checks
    # ---------------------------------------------------------------------------------------------
    def _host_ok(self) -> bool:
        if not self.server.loopback:
            return True  # the access token guards other hosts
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return is_loopback(host)

    def _token_ok(self, query: dict[str, str]) -> tuple[bool, bool]:
        """(allowed, set the cookie): no token needed, or the right one in the header, cookie or
        query."""
        want = self.server.access_token
        if not want:
            return True, False
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), want):
            return True, False
        cookie = SimpleCookie(self.headers.get("Cookie") or "")
        if COOKIE in cookie and hmac.compare_digest(cookie[COOKIE].value, want):
            return True, False
        if hmac.compare_digest(query.get("token", ""), want):
            return True, True
        return False, False

    # -- answers
    # ---------------------------------------------------------------------------------------------
    def _send(
        self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        # Scripts only from this server (no inline script, nothing from elsewhere)
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
        )
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj, default=str).encode(), "application/json", extra)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _route(self) -> tuple[str, dict[str, str], dict[str, str]] | None:
        """(path, query, extra headers) once the request passed the host and token checks; None if
        answered."""
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "this server answers to 127.0.0.1 / localhost only")
            return None
        ok, set_cookie = self._token_ok(query)
        if not ok:
            self._error(
                HTTPStatus.UNAUTHORIZED,
                "this server needs its access token: open the address "
                "`trainctl ui` printed (it ends in ?token=...)",
            )
            return None
        cookie = f"{COOKIE}={self.server.access_token}; HttpOnly; SameSite=Strict; Path=/"
        extra = {"Set-Cookie": cookie} if set_cookie else {}
        return parts.path, query, extra

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        routed = self._route()
        if routed is None:
            return
        path, query, extra = routed
        if (path in PAGES or JOB_PAGE.fullmatch(path)) and "token" in query and extra:
            # First visit with ?token=: the token moves into the cookie and the address bar is
            # cleaned (it would otherwise sit in the history, bookmarks and every link copied from
            # it)
            rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
            self._send(
                HTTPStatus.SEE_OTHER,
                b"",
                _TYPES[".txt"],
                {**extra, "Location": path + (f"?{rest}" if rest else "")},
            )
            return
        if path in PAGES:
            self._send(HTTPStatus.OK, page_html(path), _TYPES[".html"], extra)
            return
        # /jobs/N: one page for every job (the script reads N from the address)
        if JOB_PAGE.fullmatch(path):
            self._send(HTTPStatus.OK, page_html("/jobs/"), _TYPES[".html"], extra)
            return
        if path in self.server.static:
            f = self.server.static[path]
            self._send(HTTPStatus.OK, f.read_bytes(), _TYPES[f.suffix], extra)
            return
        if path == "/api/session":
            self._json(
                HTTPStatus.OK,
                {"write_token": self.server.write_token, "home": str(self.server.home.root)},
                extra,
            )
            return
        handler = _GET.get(path)
        if handler is None:
            self._error(HTTPStatus.NOT_FOUND, f"nothing at {path}")
            return
        self._answer(lambda: handler(self.server.home, query), extra)

    def do_POST(self) -> None:  # noqa: N802
        routed = self._route()
        if routed is None:
            return
        path, _query, extra = routed
        supplied = self.headers.get("X-Trainctl-Write") or ""
        if not hmac.compare_digest(supplied, self.server.write_token):
            self._error(
                HTTPStatus.FORBIDDEN, "writes need this session's write token (reload the page)"
            )
            return
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != (self.headers.get("Host") or ""):
            self._error(HTTPStatus.FORBIDDEN, "cross-site write refused")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= 1 << 20:
            self.close_connection = True  # the unread body must not be taken for the next request
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the body must be JSON of at most 1 MiB"
            )
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "the body is not JSON")
            return
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return
        segs = path.strip("/").split("/")  # api/flags/<id>/(resolve|notes|reopen)
        if (
            len(segs) == 4
            and segs[:2] == ["api", "flags"]
            and segs[2].isdigit()
            and segs[3] in api.FLAG_WRITES
        ):
            flag_id = int(segs[2])
            self._answer(lambda: api.flag_write(self.server.home, flag_id, body, segs[3]), extra)
            return
        self._error(HTTPStatus.NOT_FOUND, f"nothing to write at {path}")

    def _answer(self, produce: Callable[[], Any], extra: dict[str, str]) -> None:
        try:
            self._json(HTTPStatus.OK, produce(), extra)
        except api.NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except api.BadRequest as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except TrainctlError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))


def serve(
    home: Home, host: str = "127.0.0.1", port: int = 8080, token: str | None = None
) -> UIServer:
    """A started server (in a background thread); `shutdown()` stops it."""
    server = UIServer(home, host, port, token)
    threading.Thread(target=server.serve_forever, name="trainctl-ui", daemon=True).start()
    return server


def wait_forever(server: UIServer) -> None:
    """Serve until SIGINT (Ctrl-C) or SIGTERM. Both are set here: a process started in the
    background inherits SIGINT ignored, and would otherwise never stop on it."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(3600):
        pass
    server.shutdown()
    server.server_close()
