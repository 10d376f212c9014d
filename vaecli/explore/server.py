"""HTTP for the explorer: the standard library's threaded server, the page's own routes and nothing else.

One thread per connection, so several tabs work at once; keep-alive, so a slider's requests reuse one
connection. Request bodies are bounded; a bad request gets a status and one line of JSON, never a traceback.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from vaecli.errors import SettingError, VaeError, first_line
from vaecli.explore import routes
from vaecli.explore.assets import asset
from vaecli.explore.inputs import BadRequest, json_object

if TYPE_CHECKING:
    from vaecli.explore.app import Explorer

MAX_BODY_BYTES = 4 << 20  # a drawn or dropped image as a data: URL; the rest of the API sends a few numbers
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# The page may talk to its own server only: no CDN, no other site, inline nothing.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ExploreServer(ThreadingHTTPServer):
    """The explorer's server: one model's Explorer, shared by every request thread."""

    daemon_threads = True  # Ctrl-C does not wait for a browser's idle keep-alive connections

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, explorer: Explorer):
        self.address_family = family
        self.explorer = explorer
        super().__init__(address, Handler)

    @property
    def loopback(self) -> bool:
        return is_loopback(str(self.server_address[0]))

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a browser that drops its connection mid-answer is no news; the handler answers everything else


class Handler(BaseHTTPRequestHandler):
    """One connection's requests: GET the page and the map, POST the API's JSON."""

    server: ExploreServer
    _body_read = False
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes: with Nagle's algorithm the second waits for the client's
    # delayed ACK of the first, 40 ms on Linux, the whole of a slider move's budget.
    disable_nagle_algorithm = True
    server_version = "vaecli-explore"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        pass  # the terminal keeps the URL and errors; a line per slider move would bury them

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_HEAD(self) -> None:
        self._answer(self._get, head=True)

    def do_POST(self) -> None:
        self._answer(self._post)

    def do_PUT(self) -> None:
        self._answer(self._refuse)

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT

    def _path(self) -> str:
        return urlsplit(self.path).path

    def _get(self) -> tuple[bytes, str]:
        page = asset(self._path())
        if page is not None:
            return page
        found = routes.get(self.server.explorer, self._path())
        if found is None:
            return self._refuse()
        return _as_body(found)

    def _post(self) -> tuple[bytes, str]:
        route = routes.POST_ROUTES.get(self._path())
        if route is None:
            return self._refuse()
        body = json_object(self._read_body())
        return _as_body(route(self.server.explorer, body))

    def _refuse(self) -> tuple[bytes, str]:
        if routes.known(self._path()) or asset(self._path()) is not None:
            raise BadRequest(f"{self.command} is not allowed here", status=405)
        raise BadRequest("not found", status=404)

    def _read_body(self) -> bytes:
        """The request's body, within MAX_BODY_BYTES, as JSON; refused before it is read when too long."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadRequest("send a Content-Length, not a chunked body", status=411)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest("a POST needs a Content-Length", status=411)
        if int(length) > MAX_BODY_BYTES:
            raise BadRequest(f"the body is over {MAX_BODY_BYTES >> 20} MiB", status=413)
        if self.headers.get_content_type() != "application/json":
            raise BadRequest("send JSON, with Content-Type: application/json", status=415)
        self._body_read = True
        return self.rfile.read(int(length))

    def _body_unread(self) -> bool:
        """Whether the request came with a body that was not read (refused before, or on a route that takes none)."""
        length = self.headers.get("Content-Length", "0")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        return not self._body_read and (chunked or length != "0")

    def _answer(self, make: Callable[[], tuple[bytes, str]], head: bool = False) -> None:
        """Run `make` and send what it gives, or the error it raises as a status and one line of JSON."""
        status, headers = HTTPStatus.OK, {}
        self._body_read = False
        try:
            self._check_host()
            body, kind = make()
        except BadRequest as exc:
            status, body, kind = HTTPStatus(exc.status), _error(exc.message), "application/json"
        except VaeError as exc:  # a setting the library refused (an image it cannot read, a bad value)
            status, body, kind = HTTPStatus.BAD_REQUEST, _error(exc.message), "application/json"
        except Exception as exc:  # noqa: BLE001 - never a traceback: the page shows the line
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            body, kind = _error(f"unexpected {type(exc).__name__}: {first_line(exc)}"), "application/json"
        if self._body_unread():  # its bytes would be read as the next request: the connection cannot go on
            self.close_connection = True
            headers["Connection"] = "close"
        self._send(status, body, kind, headers, head)

    def _check_host(self) -> None:
        """On loopback, refuse a Host header naming another machine: a page elsewhere cannot reach in by
        DNS rebinding (a name of its own that resolves to 127.0.0.1)."""
        if not self.server.loopback:
            return
        try:
            host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        except ValueError:  # an unbalanced [ of an IPv6 address
            host = ""
        if host not in LOOPBACK_NAMES:
            raise BadRequest("this server answers only to localhost; open the URL it printed", status=421)

    def _send(self, status: HTTPStatus, body: bytes, kind: str, headers: dict[str, str], head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", PAGE_POLICY)
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _as_body(answer: routes.Answer) -> tuple[bytes, str]:
    if isinstance(answer, bytes):
        return answer, "image/png"
    return json.dumps(answer, allow_nan=False, separators=(",", ":")).encode("utf-8"), "application/json"


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (localhost, 127.x.x.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_server(host: str, port: int, explorer: Explorer) -> ExploreServer:
    """A server bound to host:port (port 0: any free one), listening but not yet serving; errors in one line."""
    try:
        family = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError, OverflowError):
        raise SettingError(f"`host={host}`: not an address or a name this machine can resolve") from None
    try:
        return ExploreServer((host.strip("[]"), port), family, explorer)
    except OSError as exc:
        raise SettingError(_bind_failure(host, port, exc)) from None


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"`port={port}` is in use on {host} (another `vae explore`?); choose another with `port=N`, "
                "or `port=0` for any free port")
    if exc.errno == errno.EACCES:
        return f"`port={port}`: not allowed here (ports below 1024 need root); choose one above 1023, or `port=0`"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"`host={host}`: not an address of this machine; leave it out for 127.0.0.1"
    return f"cannot listen on {host} port {port}: {first_line(exc)}"
