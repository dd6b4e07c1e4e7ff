"""Server settings, read from the environment (prefix ``FRAMECAST_``) and injected.

Nothing reads settings at import time: ``create_app(settings)`` receives a ``Settings`` and hands
it to what needs it, so tests build as many differently configured apps as they like.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can tune. Each field is also ``FRAMECAST_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FRAMECAST_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port the HTTP server listens on.")
    output_dir: Path = Field(Path("output"), description="Root of every server-side output file.")
    public_url: str | None = Field(
        None,
        description="Base URL clients use to reach this server (for the websocket URLs it hands "
        "out); default: derived from each request.",
    )
    max_sessions: int = Field(64, ge=1, description="Sessions open at once.")
    keep_finished_sessions: int = Field(
        1000, ge=0, description="Closed or failed sessions kept for GET /v1/sessions and downloads."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, description="Largest websocket message; clients split chunks to fit."
    )
    worker_queue_chunks: int = Field(
        4, ge=1, description="Chunks buffered between the server and one encoder process."
    )
    open_timeout: float = Field(
        30.0, gt=0, description="Seconds an encoder process may take to start and open its output."
    )
    connect_timeout: float = Field(
        10.0, gt=0, description="Seconds a network output may take to connect before its session fails."
    )
    reconnect_timeout: float = Field(
        60.0, gt=0, description="Seconds a dropped network destination may stay down before its session fails."
    )
    finish_timeout: float = Field(
        120.0, gt=0, description="Seconds an encoder may take to flush and write its trailer."
    )
    resume_timeout: float = Field(
        30.0, ge=0, description="Seconds a session waits for its client to reconnect before finalizing."
    )
    idle_timeout: float = Field(
        300.0, gt=0, description="Seconds a session with no client and no data is kept before it is finalized."
    )
    log_level: str = Field("info", description="Logging level (debug, info, warning, error).")
