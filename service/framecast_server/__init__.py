"""framecast server: a FastAPI service that feeds tensor chunks into per-session PyAV encoders.

The layout follows the process boundary: ``api/`` (the app, on the event loop), ``planning/``
(configs into checked plans), ``session/`` (the event loop's side of a session), ``encoder/``
(runs only in encoder processes), and at the top what both sides share. The top-level names are
loaded lazily (PEP 562), so that an encoder process, which imports ``framecast_server.encoder``,
never loads the web app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framecast_server.api.app import create_app
    from framecast_server.config import Settings

__all__ = ["create_app", "Settings"]

_LAZY = {"create_app": "framecast_server.api.app", "Settings": "framecast_server.config"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'framecast_server' has no attribute {name!r}")
