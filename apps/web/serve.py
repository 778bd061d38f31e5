"""Serve the browser demo on this machine: ``python apps/web/serve.py [--port 8000]`` (``make web``).

Serves ``apps/web/`` (the page, and MediaPipe Tasks with its wasm from ``node_modules/``, installed
by ``npm ci`` in ``apps/web``) at ``/`` and the repository's ``exports/`` at ``/exports/``, on
127.0.0.1 only. ``.wasm`` goes out as ``application/wasm`` (browsers compile wasm while it
streams only with that type) and ``.mjs`` as JavaScript (module scripts need it). Standard
library only. Prints the URL to open, then one line per request on stderr.

Example:
    python apps/web/serve.py --port 0    # any free port; the first line printed is the URL
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent
EXPORTS = WEB.parent.parent / "exports"
TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
         ".tflite": "application/octet-stream", ".map": "application/json"}


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def translate_path(self, path: str) -> str:
        # /exports/NAME → the repository's exports/NAME; everything else from apps/web
        local = super().translate_path(path)
        rel = Path(local).relative_to(WEB)
        if rel.parts[:1] == ("exports",):
            return str(EXPORTS.joinpath(*rel.parts[1:]))
        return local

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()


class QuietHandler(Handler):
    def log_message(self, *args) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (default 8000)")
    parser.add_argument("--quiet", action="store_true", help="no line per request")
    args = parser.parse_args(argv)

    if not (WEB / "node_modules" / "@mediapipe" / "tasks-vision").is_dir():
        print(f"{WEB / 'node_modules'} has no @mediapipe/tasks-vision; run `npm ci` in {WEB} "
              "(or `make web`, which does)", file=sys.stderr)
        return 1
    handler = functools.partial(QuietHandler if args.quiet else Handler, directory=str(WEB))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as err:
        print(f"cannot listen on 127.0.0.1:{args.port} ({err.strerror}); pick another with --port "
              "(make web WEB_PORT=8001)", file=sys.stderr)
        return 1
    print(f"kseg web demo: http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
