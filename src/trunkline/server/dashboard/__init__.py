"""The dashboard: server-rendered pages over the store, behind a sign-in with a key.

`router` contains every page; `assets_router` serves the scripts and styles,
Plotly's from the installed package, without a key.
"""

from fastapi import APIRouter

from trunkline.server.dashboard import audit, cost, overview, prompts, quality, signin, traces
from trunkline.server.dashboard.assets import PUBLIC_PREFIXES
from trunkline.server.dashboard.assets import router as assets_router

router = APIRouter(include_in_schema=False)
for module in (signin, overview, cost, quality, traces, prompts, audit):
    router.include_router(module.router)

#: Paths served without a key, besides those under `PUBLIC_PREFIXES`.
PUBLIC_PATHS = signin.PUBLIC_PATHS

__all__ = ["PUBLIC_PATHS", "PUBLIC_PREFIXES", "assets_router", "router"]
