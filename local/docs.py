"""The API's documentation page for `make run`: Swagger UI at /docs on the API's own port.

Same origin as the API, so "Try it out" calls it without CORS, and the page reads the
document the app itself serves (GET /openapi.json). Swagger UI's files come from the pinned
`swagger-ui-bundle-v2` package (requirements-dev.txt); nothing here is ever deployed.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from local.server import FramingRequestHandler

DOCS_PATH = "/docs"
#: The page: Swagger UI on /openapi.json; the bearer token given to "Authorize" is kept
#: across reloads (in the browser's local storage).
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>serverless-app API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: true,
      displayRequestDuration: true,
      showExtensions: true,
    });
  </script>
</body>
</html>
"""


def assets_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return Path(str(swagger_ui_path))


def docs_answer(path: str) -> tuple[bytes, str] | None:
    """(body, content type) for a GET of `path` under /docs; None for any other path, or
    a file the bundle does not have (the app answers those)."""
    path = path.split("?", 1)[0]
    if path in (DOCS_PATH, DOCS_PATH + "/", DOCS_PATH + "/index.html"):
        return PAGE.encode(), "text/html; charset=utf-8"
    if not path.startswith(DOCS_PATH + "/"):
        return None
    name = path[len(DOCS_PATH) + 1 :]
    folder = assets_dir()
    if name not in {f.name for f in folder.iterdir() if f.is_file()}:  # no ../ tricks
        return None
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return (folder / name).read_bytes(), kind


class DocsRequestHandler(FramingRequestHandler):
    """The local API's handler, answering GET /docs (and its assets) before the app."""

    def do_GET(self) -> None:
        answer = docs_answer(self.path)
        if answer is None:
            super().do_GET()
            return
        body, kind = answer
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)
