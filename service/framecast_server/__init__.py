"""framecast server: a FastAPI service that feeds tensor chunks into per-session PyAV encoders."""

from .app import create_app
from .config import Settings

__all__ = ["create_app", "Settings"]
