"""The browser UI's HTTP server: standard library only, bound to the loopback interface.

Every request is checked: the Host header must name the loopback address and port the server
listens on (so a web page elsewhere cannot reach it through DNS rebinding), POST bodies must be
small JSON objects with typed fields, cross-origin POSTs are refused, and static files come from
a fixed in-package list. All workspace calls run one at a time under a lock; the camera overlay
(``api/camera``) only takes it to copy the labels and draws outside it, off the click's path.
"""
from __future__ import annotations

import json
import os
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs

from npiseg_ros.annotate import view
from npiseg_ros.annotate.camera import COLOURINGS, CameraError
from npiseg_ros.annotate.workspace import Workspace
from npiseg_ros.core.types import MAX_OBJECT_ID
from npiseg_ros.resources import PACKAGE_ROOT

__all__ = ["AnnotateServer", "serve"]

MAX_BODY = 64 * 1024
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/view3d.js": ("view3d.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}
VENDOR = {"/vendor/three.module.js": "three.module.js", "/vendor/three.core.js": "three.core.js"}
"""three.js files served from the folder ``scripts/setup.sh`` installs it into (npm)."""
LOOPBACK = ("127.0.0.1", "localhost")


def three_folder() -> Path | None:
    """Where three.js's ``build/`` is (``NPISEG_WEB_DIR`` or ``<repo>/.web``), or None: the
    page then draws with its own 2-D canvas renderer."""
    root = Path(os.environ.get("NPISEG_WEB_DIR") or PACKAGE_ROOT / ".web")
    build = root / "node_modules" / "three" / "build"
    return build if all((build / name).is_file() for name in VENDOR.values()) else None


def three_version() -> str | None:
    build = three_folder()
    if build is None:
        return None
    try:
        return str(json.loads((build.parent / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


class RequestError(ValueError):
    pass


class FrameMoved(ValueError):
    """A request for a frame that is no longer on screen (answered 409)."""


def _query(query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """The parameters of a GET query string, each at most once and among ``allowed``."""
    params = parse_qs(query, keep_blank_values=True)
    for key, values in params.items():
        if key not in allowed:
            raise RequestError(f"unknown parameter {key!r} (allowed: {', '.join(allowed)})")
        if len(values) != 1 or len(values[0]) > 512 or "\0" in values[0]:
            raise RequestError(f"'{key}' must be given once, at most 512 characters")
    return {key: values[0] for key, values in params.items()}


def _int(body: dict, key: str, low: int, high: int, default=None) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"'{key}' must be an integer in [{low}, {high}], got {value!r}")
    return value


def _text(body: dict, key: str, limit: int = 128) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > limit or "\0" in value:
        raise RequestError(f"'{key}' must be a non-empty string of at most {limit} characters")
    return value


def _bool(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise RequestError(f"'{key}' must be true or false, got {value!r}")
    return value


class AnnotateServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, workspace: Workspace, port: int = 8765, quiet: bool = True) -> None:
        self.workspace = workspace
        self.lock = workspace.lock  # the background thread takes it too
        self.quiet = quiet
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    # ------------------------------------------------------------------ API
    def handle_api(self, action: str, body: dict) -> dict:
        ws = self.workspace
        with self.lock:
            if action == "state":  # reading: not activity the background work waits out
                return ws.state()
            ws.touch()
            if action == "click":
                background = _bool(body, "background")
                if "point_index" in body:
                    ws.click(point_index=_int(body, "point_index", 0, 2**31 - 1),
                             background=background)
                else:
                    position = body.get("position")
                    if (not isinstance(position, list) or len(position) != 3
                            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                       for v in position)):
                        raise RequestError("'position' must be a list of 3 numbers, or give "
                                           "'point_index'")
                    ws.click(position=[float(v) for v in position], background=background)
            elif action == "undo":
                ws.undo()
            elif action == "reset":
                ws.reset()
            elif action == "new_object":
                ws.new_object()
            elif action == "active":
                ws.set_active(_int(body, "object_id", 1, MAX_OBJECT_ID))
            elif action == "step":
                ws.step(_int(body, "delta", -1_000_000, 1_000_000))
            elif action == "goto":
                ws.goto_index(_int(body, "index", 0, 10**9))
            elif action == "class":
                object_id = body.get("object_id")
                ws.set_class(_text(body, "class"), None if object_id is None else
                             _int(body, "object_id", 0, MAX_OBJECT_ID))
            elif action == "attribute":
                value = body.get("value")
                if not isinstance(value, (str, bool)) or isinstance(value, str) and \
                        len(value) > 128:
                    raise RequestError("'value' must be a string or true/false")
                object_id = body.get("object_id")
                ws.set_attribute(_text(body, "name"), value, None if object_id is None else
                                 _int(body, "object_id", 1, MAX_OBJECT_ID))
            elif action == "status":
                ws.set_status(_text(body, "status", 16))
            elif action == "propagate":
                ws.propagate(_int(body, "frames", 1, 1000, default=5))
            elif action == "export":
                ws.export_now()
            elif action == "open":
                path, topic = body.get("path"), body.get("topic", "")
                if not isinstance(path, str) or not path or len(path) > 4096 or "\0" in path:
                    raise RequestError("'path' must be a non-empty file or folder path")
                if not isinstance(topic, str) or len(topic) > 512:
                    raise RequestError("'topic' must be a string")
                ws.open_path(path, topic)
            else:
                raise RequestError(f"unknown action {action!r}")
            return ws.state()

    def binary(self, what: str) -> bytes:
        with self.lock:
            workspace = self.workspace
            workspace.touch()
            if what == "cloud":
                return workspace.cloud_bytes()
            if what == "intensity":
                return workspace.intensity_bytes()
            return workspace.label_bytes()

    def boxes(self) -> dict:
        """Object id -> its fitted box (centre, size length/width/height, yaw), metres."""
        with self.lock:
            return self.workspace.boxes()

    def ontology(self) -> dict:
        with self.lock:
            return self.workspace.ontology.to_json()

    def cameras(self) -> dict:
        """``GET api/cameras``: the source's cameras (read outside the lock)."""
        with self.lock:
            source = self.workspace.frames.source
        return view.cameras_json(source)

    def camera(self, query: str) -> tuple[bytes, dict]:
        """``GET api/camera?camera=TOPIC&frame=INDEX&colour=labels|uncertainty``: PNG of the
        frame on screen's image with its points drawn, and what was drawn. The lock is held
        only to copy the labels; reading, projecting and drawing run outside it.

        Raises:
            RequestError: a bad parameter. FrameMoved: ``frame`` is not the frame on screen.
            CameraError: no overlay, and why.
        """
        params = _query(query, ("camera", "frame", "colour"))
        colouring = params.get("colour", "labels")
        if colouring not in COLOURINGS:
            raise RequestError(f"'colour' must be one of {', '.join(COLOURINGS)}, got "
                               f"{colouring!r}")
        frame = params.get("frame")
        if frame is not None and not (frame.isdigit() and int(frame) <= 10**9):
            raise RequestError(f"'frame' must be a frame index (an integer >= 0), got {frame!r}")
        with self.lock:
            on_screen = self.workspace.frames.index
            if frame is not None and int(frame) != on_screen:
                raise FrameMoved(f"frame {frame} is not on screen (frame {on_screen} is): "
                                 "labels are drawn for the frame on screen only")
            cameras, sweep = view.camera_inputs(self.workspace)
        png, info = view.camera_png(cameras, sweep, params.get("camera") or None, colouring)
        info["frame_index"] = on_screen
        return png, info


class _Handler(BaseHTTPRequestHandler):
    server: AnnotateServer
    server_version = "npiseg-annotate"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        if not self.server.quiet:
            super().log_message(format, *args)

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        port = self.server.server_address[1]
        return host in {f"{name}:{port}" for name in LOOPBACK}

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data: blob:; style-src 'self'")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self):  # noqa: N802 - http.server naming
        if not self._host_ok():
            return self._json(HTTPStatus.FORBIDDEN, {"error": "bad Host header"})
        path, _, query = self.path.partition("?")
        if path in STATIC:
            name, content_type = STATIC[path]
            data = resources.files("npiseg_ros.annotate").joinpath("web", name).read_bytes()
            return self._send(HTTPStatus.OK, data, content_type)
        if path == "/api/state":
            return self._json(HTTPStatus.OK, self.server.handle_api("state", {}))
        if path in VENDOR:
            build = three_folder()
            if build is None:
                return self._json(HTTPStatus.NOT_FOUND, {"error": "three.js is not installed "
                                                         "(scripts/setup.sh, npm)"})
            return self._send(HTTPStatus.OK, (build / VENDOR[path]).read_bytes(),
                              "text/javascript; charset=utf-8")
        if path == "/api/ontology":
            return self._json(HTTPStatus.OK, self.server.ontology())
        if path == "/api/viewer":
            return self._json(HTTPStatus.OK, {"three": three_version()})
        if path == "/api/boxes":
            return self._json(HTTPStatus.OK, self.server.boxes())
        if path == "/api/cameras":
            try:
                return self._json(HTTPStatus.OK, self.server.cameras())
            except Exception as error:  # keep serving; say what happened
                return self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                                  {"error": f"listing the cameras failed: {error!r}"})
        if path == "/api/camera":
            return self._camera(query)
        if path in ("/api/cloud", "/api/labels", "/api/intensity"):
            data = self.server.binary(path.rsplit("/", 1)[1])
            return self._send(HTTPStatus.OK, data, "application/octet-stream")
        return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {path}"})

    def _camera(self, query: str) -> None:
        """The overlay PNG, what was drawn in the ``X-Npiseg-Camera`` header (JSON); JSON
        errors: 400 bad parameter, 409 frame no longer on screen, 404 no overlay and why."""
        try:
            png, info = self.server.camera(query)
        except RequestError as error:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except FrameMoved as error:
            return self._json(HTTPStatus.CONFLICT, {"error": str(error)})
        except CameraError as error:
            return self._json(HTTPStatus.NOT_FOUND, {"error": str(error)})
        except Exception as error:  # keep serving; say what happened
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                              {"error": f"camera overlay failed: {error!r}"})
        return self._send(HTTPStatus.OK, png, "image/png",
                          {"X-Npiseg-Camera": json.dumps(info)})

    def do_POST(self):  # noqa: N802
        if not self._host_ok():
            return self._json(HTTPStatus.FORBIDDEN, {"error": "bad Host header"})
        origin = self.headers.get("Origin")
        if origin is not None and origin.rstrip("/") + "/" != self.server.url and \
                origin.rstrip("/") + "/" != self.server.url.replace("127.0.0.1", "localhost"):
            return self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin request refused"})
        if not self.path.startswith("/api/") or "?" in self.path:
            return self._json(HTTPStatus.NOT_FOUND, {"error": "no such action"})
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                              {"error": "send application/json"})
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise RequestError("the body must be a JSON object")
            state = self.server.handle_api(self.path[len("/api/"):], body)
        except (RequestError, ValueError) as error:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except Exception as error:  # keep serving; say what happened
            self.server.workspace.fail(f"internal error: {error!r}")
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": repr(error)})
        return self._json(HTTPStatus.OK, state)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(workspace: Workspace, port: int = 8765, open_browser: bool = False,
          quiet: bool = True, ready=None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); an edit in flight finishes its autosave."""
    import signal

    server = AnnotateServer(workspace, port, quiet)
    workspace.start_background()
    try:
        signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        pass
    print(f"npiseg-annotate: serving {server.url} (session folder {workspace.folder}); "
          "Ctrl-C to stop", flush=True)
    if ready is not None:
        ready(server)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        with server.lock:  # wait for a request in flight (its autosave) before closing
            server.server_close()
        workspace.stop_background()  # the exports still pending are written
        print(f"npiseg-annotate: stopped; the work is in {workspace.folder}", flush=True)
