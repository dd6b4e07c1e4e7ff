"""Server-side output files: one session per path, and each file created afresh, exclusively.

Two sessions writing the same path would both "succeed" with one file holding bits of each, and
a later session could replace a finished file that another API key is about to download. So a
session's path is claimed before its encoder opens it:

- a path an open session writes (or one being opened right now) is refused;
- a path written by a finished session the server still remembers (``keep_finished_sessions``) is
  refused unless that session belongs to the same API key, whose own file it is to replace;
- a file that exists from before (no session the server remembers: an earlier run, the operator)
  is replaced. It is unlinked and a new file is created in its place, so a download of the old
  one in progress keeps reading the old inode whole. Only a regular file is replaced:
  ``destinations.confine`` refuses FIFOs, sockets, devices and directories, and the exclusive
  create here (``O_EXCL | O_NOFOLLOW | O_NONBLOCK``) refuses whatever appears there in between.

Refusals are ``InvalidConfig`` naming ``destination.path`` (422), like every other config refusal.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import Any

from framecast_server.errors import InvalidConfig

FIELD = "destination.path"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class OutputFiles:
    """The server-side paths of sessions being opened; the sessions a manager remembers do the rest."""

    def __init__(self) -> None:
        self._opening: set[str] = set()

    def claim(self, path: str, shown: str, owner: str | None, sessions: Iterable[Any], field: str = FIELD) -> None:
        """Take ``path`` (resolved) for a new session of the API key ``owner`` and create it empty.

        Args:
            shown: the path as the config gave it, for messages.
            sessions: every session the server remembers (``Session``: ``plan.files``, ``state``, ``owner``).
            field: the config's field that named it (``destination.path``, ``destinations.N.path``).

        Raises:
            InvalidConfig: the path is another session's, or not a regular file.
        """
        for session in sessions:
            if all(output.path != path for output in session.plan.files):
                continue
            if not session.state.done:
                raise InvalidConfig(
                    f"{shown!r} is being written by another open session ({session.id}); choose another path", field
                )
            if session.owner != owner:
                raise InvalidConfig(
                    f"{shown!r} was written by another API key's session, which this server still keeps; "
                    "choose another path",
                    field,
                )
        if path in self._opening:
            raise InvalidConfig(f"{shown!r} is being opened by another session; choose another path", field)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            self._create(path)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a file from before: replaced (confine checked it is a regular file)
            try:
                self._create(path)
            except FileExistsError:
                raise InvalidConfig(f"{shown!r} appeared again while it was being replaced", field) from None
        except OSError as exc:  # a symlink planted at the last moment (ELOOP), a parent that is a file, ...
            raise InvalidConfig(f"cannot create {shown!r}: {exc.strerror}", field) from None
        self._opening.add(path)

    @staticmethod
    def _create(path: str) -> None:
        os.close(os.open(path, _CREATE, 0o666))

    def opened(self, path: str) -> None:
        """The session for ``path`` is open and listed: the manager's sessions guard it from now on."""
        self._opening.discard(path)

    def abandon(self, path: str) -> None:
        """The session for ``path`` did not open: release the path and remove the file if still empty."""
        self._opening.discard(path)
        with contextlib.suppress(OSError):
            if os.lstat(path).st_size == 0:
                os.unlink(path)
