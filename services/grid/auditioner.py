"""The auditioner over HTTP: the static page in `web/` plus a read-only JSON/file API over the artifact store.

    aud = Auditioner(store, token="secret", port=8080).start()     # a daemon thread; aud.url, aud.stop()
    print(aud.page_url("grids/20261125-203000-ab12cd"))            # http://host:8080/grids/20261125-203000-ab12cd

Routes (GET only):
    /grids/<id>   /view?id=<artifact id>[&compare=<id>]   the page (web/index.html); `/` lists the grids
    /static/<file>                                         web/app.js, web/style.css
    /api/grids                                             [{id, model, d0, d1, ...}] newest first
    /api/grid?id=<artifact id>                             grid.json (+ created_at, inputs)
    /api/file?id=<artifact id>&name=<file>                 a file of that artifact (wav, .params, mosaic.png)
    /healthz                                               "ok", no token
Live panel (only when the auditioner has a LiveBridge, smf.grid.live; `smf grid open --rnn HOST:PORT --model M`):
    GET /api/live                                          {enabled, model, params, sample_rate, ...}
    POST /live  {values, temperature}                      a session {session, params, sample_rate}; 429 past the limit
    GET /live/<session>/audio                              the session's blocks, one long response (see live.py)
    POST /live/<session>/knobs  {values, temperature}      {rev}: the revision its first block will carry
    POST /live/<session>/stop                              {stopped}
POSTs take a JSON body (Content-Type application/json, at most 4 KiB), which a cross-site form cannot send.
Files are proxied from the store — only names listed in the artifact's manifest, sha256-verified on read — so the
browser never sees store credentials or presigned URLs. With a token, a request must carry it as
`Authorization: Bearer`, the `smf_token` cookie, or `?token=` (which also sets the cookie, so links keep working).
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import threading
import urllib.parse
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from smf.common import refs
from smf.common.errors import FailedPrecondition, InvalidArgument, SmfError
from smf.common.limits import parse_json
from smf.common.lineage import Manifest, list_artifacts, read_manifest
from smf.common.store import Store
from smf.grid.live import check_temperature, check_values
from smf.grid.render import read_grid

log = logging.getLogger("smf.grid.http")

WEB = Path(__file__).resolve().parent / "web"
STATIC = {
    "app.js": "text/javascript",
    "live.js": "text/javascript",
    "worklet.js": "text/javascript",
    "style.css": "text/css",
    "index.html": "text/html",
}
MAX_BODY = 4096
COOKIE = "smf_token"
_HTTP_CODES = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "UNAVAILABLE": 503,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 409,
    "DATA_LOSS": 500,
}


def grid_summary(manifest: Manifest) -> dict:
    """What a grid listing shows, from the manifest alone (no grid.json read)."""
    cfg = manifest.config if isinstance(manifest.config, dict) else {}
    return {
        "id": manifest.id,
        "kind": manifest.kind,
        "created_at": manifest.created_at,
        **{
            k: cfg.get(k)
            for k in (
                "model",
                "d0",
                "d1",
                "variations",
                "interpolation",
                "sample_rate",
                "duration",
                "latent_dim",
                "corners",
            )
        },
    }


def list_grids(store: Store, manifest=None) -> list[dict]:
    """Summaries of the grids under grids/, newest first (`manifest(aid)` may be a caching reader)."""
    manifest = manifest or (lambda aid: read_manifest(store, aid))
    out = []
    for aid in reversed(list_artifacts(store, "grids")):  # ids sort by creation time
        try:
            out.append(grid_summary(manifest(aid)))
        except SmfError as exc:  # one broken manifest must not hide the others
            log.warning("skipping %s: %s", aid, exc.message)
    return out


def artifact_id(raw: str) -> str:
    """A grid id from a URL: 'grids/x' (or any '<kind>/x' holding a grid), or a bare 'x' meaning grids/x."""
    return refs.artifact_id(raw, "grids", field="id", any_kind=True)


class Auditioner:
    """The HTTP side of the grid service (also run alone by `smf grid open`)."""

    def __init__(
        self,
        store: Store,
        *,
        token: str | None = None,
        host: str = "0.0.0.0",
        port: int = 8080,
        public_host: str | None = None,
        live=None,
    ):
        """`live`: a smf.grid.live.LiveBridge to serve the live panel from (None: the panel says it is off)."""
        self.store, self.token = store, token or None
        self.live = live
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()  # committed artifacts never change
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"app": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host = public_host or ("127.0.0.1" if host in ("0.0.0.0", "") else host)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def page_url(self, grid_id: str, *, compare: str | None = None, with_token: bool = False) -> str:
        gid = artifact_id(grid_id)
        if gid.startswith("grids/") and gid.count("/") == 1:
            url = f"{self.url}/{gid}"
            query = {}
        else:
            url, query = f"{self.url}/view", {"id": gid}
        if compare:
            query["compare"] = compare
        if with_token and self.token:
            query["token"] = self.token
        return url + ("?" + urllib.parse.urlencode(query) if query else "")

    def start(self) -> Auditioner:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="grid-http", daemon=True)
        self._thread.start()
        log.info("auditioner on %s", self.url)
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        if self.live is not None:
            self.live.close()
        self.httpd.shutdown()
        self.httpd.server_close()

    def manifest(self, aid: str) -> Manifest:
        with self._lock:
            if aid in self._manifests:
                self._manifests.move_to_end(aid)
                return self._manifests[aid]
        m = read_manifest(self.store, aid)
        with self._lock:
            self._manifests[aid] = m
            while len(self._manifests) > 256:
                self._manifests.popitem(last=False)
        return m

    def list_grids(self) -> list[dict]:
        return list_grids(self.store, self.manifest)


class _Handler(BaseHTTPRequestHandler):
    app: Auditioner
    server_version = "smf-grid"

    def log_message(self, fmt, *args):  # route the access log through logging, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    # --- auth ---
    def _presented_token(self, query: dict) -> tuple[str | None, bool]:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:], False
        if "token" in query:
            return query["token"], True
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return urllib.parse.unquote(value), False
        return None, False

    def _authorized(self, query: dict) -> tuple[bool, bool]:
        if not self.app.token:
            return True, False
        token, from_query = self._presented_token(query)
        ok = token is not None and hmac.compare_digest(token.encode(), self.app.token.encode())
        return ok, ok and from_query

    # --- responses ---
    def _send(
        self, status: int, body: bytes, content_type: str, *, cache: bool = False, set_cookie: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        # artifact files never change once committed; pages and listings do
        self.send_header("Cache-Control", "private, max-age=31536000, immutable" if cache else "no-store")
        if set_cookie:
            self.send_header(
                "Set-Cookie", f"{COOKIE}={urllib.parse.quote(self.app.token)}; Path=/; HttpOnly; SameSite=Strict"
            )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc, **kw) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", **kw)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self._handle(self._route)

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        if not (path == "/live" or path.startswith("/live/")):  # the rest of the API stays read-only
            return self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ('POST') for {path}")
        self._handle(lambda path, query, set_cookie: self._post(path, self._body()))

    def _handle(self, route):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        path = url.path
        if path == "/healthz":
            return self._send(200, b"ok\n", "text/plain")
        ok, set_cookie = self._authorized(query)
        if not ok:
            return self._error(401, "this page needs the service token: open it with ?token=<SMF_TOKEN>")
        try:
            route(path, query, set_cookie)
        except SmfError as exc:
            self._error(_HTTP_CODES.get(exc.code.name, 500), exc.message)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the browser went away (e.g. it stopped a playing clip) or stopped reading a live stream
        except Exception:
            log.exception("error serving %s", path)
            self._error(500, "internal error (see server log)")

    def _route(self, path: str, query: dict, set_cookie: bool) -> None:
        if path == "/" or path == "/view" or path.startswith("/grids/"):
            return self._send(200, (WEB / "index.html").read_bytes(), "text/html; charset=utf-8", set_cookie=set_cookie)
        if path.startswith("/static/"):
            name = path[len("/static/") :]
            if name not in STATIC:
                return self._error(404, f"no such file: {name}")
            return self._send(200, (WEB / name).read_bytes(), STATIC[name] + "; charset=utf-8", set_cookie=set_cookie)
        if path == "/api/grids":
            return self._json(200, {"grids": self.app.list_grids()})
        if path == "/api/live":
            live = self.app.live
            return self._json(200, live.describe() if live else {"enabled": False})
        if path.startswith("/live/") and path.endswith("/audio"):
            return self._stream(self._live().get(path.split("/")[2]))
        if path == "/api/grid":
            aid = artifact_id(query.get("id", ""))
            self.app.manifest(aid)  # NotFound before reading anything else
            return self._json(200, read_grid(self.app.store, aid))
        if path == "/api/file":
            aid = artifact_id(query.get("id", ""))
            name = query.get("name", "")
            manifest = self.app.manifest(aid)
            if name not in manifest.files:
                return self._error(404, f"{aid} has no file {name!r}")
            body = self.app.store.get_bytes(f"{manifest.id}/{name}")
            ctype = (
                "application/json"
                if name.endswith((".params", ".json"))
                else mimetypes.guess_type(name)[0] or "application/octet-stream"
            )
            return self._send(200, body, ctype, cache=True)
        self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    # --- live panel ---
    def _live(self):
        if self.app.live is None:
            raise FailedPrecondition("the live panel is off: start the auditioner with --rnn HOST:PORT --model M")
        return self.app.live

    def _body(self) -> dict:
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise InvalidArgument("Content-Type", "must be application/json")
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise InvalidArgument("Content-Length", "must be an integer") from None
        if not 0 <= n <= MAX_BODY:
            raise InvalidArgument("Content-Length", f"the body must be at most {MAX_BODY} bytes, got {n}")
        doc = parse_json(self.rfile.read(n) or b"{}", field="body")
        if not isinstance(doc, dict):
            raise InvalidArgument("body", "must be a JSON object")
        return doc

    def _post(self, path: str, body: dict) -> None:
        parts = path.strip("/").split("/")
        if parts == ["live"]:
            s = self._live().open(body.get("values"), body.get("temperature"))
            return self._json(200, s.info())
        if len(parts) == 3 and parts[0] == "live" and parts[2] in ("knobs", "stop"):
            s = self._live().get(parts[1])
            if parts[2] == "stop":
                s.close("stopped by the page")
                return self._json(200, {"stopped": s.id})
            values = check_values(body.get("values") or {}, s.names, field="values")
            return self._json(200, {"rev": s.knobs(values, check_temperature(body.get("temperature")))})
        self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {path}")

    def _stream(self, session) -> None:
        """The session's blocks down one response with no length: HTTP/1.0, so the end is the connection closing."""
        blocks = session.blocks()
        first = next(blocks, b"")  # FailedPrecondition (a second reader) before any header is sent
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Sample-Rate", str(session.bridge.sample_rate))
        self.end_headers()
        self.close_connection = True
        # a page that stops reading without closing must not hold this thread: writes give up after the idle time
        self.connection.settimeout(session.bridge.idle_s)
        try:
            self.wfile.write(first)
            for block in blocks:
                self.wfile.write(block)
                self.wfile.flush()
        finally:
            session.close("the page stopped reading")
