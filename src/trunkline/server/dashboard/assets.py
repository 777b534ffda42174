"""The dashboard's scripts and styles, Plotly's from the installed package, served without a key.

Each URL names the content it serves (Plotly's version, or a hash of our
own file), so browsers may keep a response for a year.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import plotly
from fastapi import APIRouter, Request
from fastapi.responses import Response

from trunkline.server.dashboard.rendering import PLOTLY_URL, STATIC

router = APIRouter(include_in_schema=False)

PLOTLY_FILE = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

#: Files under server/static that may be served, with their media types.
_OWN_FILES = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}

_LONG_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    """A file held in memory, as is and gzip-compressed."""

    body: bytes
    compressed: bytes
    media_type: str
    etag: str


@cache
def load_asset(path: Path, media_type: str) -> Asset:
    """Read and compress a file once per process; Plotly's 4.8 MB compress to about 1.4 MB."""
    body = path.read_bytes()
    return Asset(
        body=body,
        compressed=gzip.compress(body, compresslevel=6, mtime=0),
        media_type=media_type,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
    )


def asset_response(request: Request, asset: Asset) -> Response:
    headers = {"cache-control": _LONG_CACHE, "etag": asset.etag, "vary": "accept-encoding"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["content-encoding"] = "gzip"
        return Response(asset.compressed, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get(PLOTLY_URL)
def plotly_script(request: Request) -> Response:
    """Serve Plotly's JavaScript bundle from the installed `plotly` package."""
    return asset_response(request, load_asset(PLOTLY_FILE, "text/javascript; charset=utf-8"))


@router.get("/static/{name}")
def static_file(name: str, request: Request) -> Response:
    """Serve the dashboard's own stylesheet and script."""
    media_type = _OWN_FILES.get(name)
    if media_type is None:
        return Response(f"no static file {name!r}", status_code=404, media_type="text/plain")
    return asset_response(request, load_asset(STATIC / name, media_type))


#: Path prefixes served without a key.
PUBLIC_PREFIXES = ("/static/",)
