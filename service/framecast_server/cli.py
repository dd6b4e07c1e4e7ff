"""``framecast serve``: run the server with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from .config import Settings


def serve(host: str | None = None, port: int | None = None, output_dir: Path | None = None) -> None:
    """Start the server; flags given here override the FRAMECAST_* environment."""
    import uvicorn

    from .app import create_app

    overrides = {k: v for k, v in {"host": host, "port": port, "output_dir": output_dir}.items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_message_bytes + 4096,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.finish_timeout),
    )
