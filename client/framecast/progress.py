"""Optional tqdm progress bars for long writes. tqdm is not a dependency: asking for progress
without it installed is a clear error, not a silent no-op."""

from __future__ import annotations

from typing import Any

from .errors import StateError


class NoProgress:
    """Stands in for a bar when progress is off."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bar(enabled: bool, total: int, unit: str, desc: str) -> Any:
    """A tqdm bar when ``enabled`` (and the work is more than one step), else a no-op."""
    if not enabled or total <= 1:
        return NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise StateError("progress=True needs tqdm: pip install tqdm") from None
    return tqdm(total=total, unit=unit, desc=desc, leave=False, dynamic_ncols=True)
