"""Server-side output files: one session per path, and each file created afresh, exclusively.

Two sessions writing the same path would both "succeed" with one file holding bits of each, and
a later session could replace a finished file that another API key is about to download. So a
session's path is claimed before its encoder opens it:

- a path an open session writes (or one being opened right now) is refused: 409 ``path_in_use``;
- a path written by a finished session the server still remembers (``keep_finished_sessions``) is
  refused unless that session belongs to the same API key, whose own file it is to replace;
- a file that exists (from that session, an earlier run, the operator) is replaced only when the
  config says ``overwrite: true``; without it the session is refused (422 ``path_exists``) and
  the file is left alone. Replacing unlinks it and creates a new file in its place, so a download
  of the old one in progress keeps reading the old inode whole. Only a regular file is replaced:
  ``destinations.confine`` refuses FIFOs, sockets, devices and directories, and the exclusive
  create here (``O_EXCL | O_NOFOLLOW | O_NONBLOCK``) refuses whatever appears there in between.

An HLS or DASH output (``planning/segmenting.py``) claims every name it may write: its playlist
and the segments named after it, in its directory. Its files from an earlier stream are replaced
the same way, only when the config says ``overwrite: true``; its playlist is not created here (the muxer
writes it whole when the first segment is done).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import Any

from framecast_server.errors import InvalidConfig, PathExists, PathInUse
from framecast_server.planning.plan import OutputPlan
from framecast_server.planning.segmenting import open_directory

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class OutputFiles:
    """The server-side outputs of sessions being opened; the sessions a manager remembers do the rest."""

    def __init__(self) -> None:
        self._opening: list[OutputPlan] = []

    def claim(self, output: OutputPlan, owner: str | None, sessions: Iterable[Any]) -> None:
        """Take ``output``'s path (or, for HLS and DASH, its names) for a new session of the API key
        ``owner``, and create the file empty (for HLS and DASH: its directory).

        Args:
            sessions: every session the server remembers (``Session``: ``plan.files``, ``state``, ``owner``).

        Raises:
            PathInUse: another session writes it, or wrote it and belongs to another key.
            PathExists: a file from before that the config does not let be replaced.
            InvalidConfig: not a regular file, or not creatable.
        """
        assert output.path is not None
        shown = output.relative_path or output.path
        field = output.where + ".path"
        for session in sessions:
            if not any(output.collides(other) for other in session.plan.files):
                continue
            if not session.state.done:
                raise PathInUse(
                    f"{shown!r} is being written by another open session ({session.id}); choose another path", field
                )
            if session.owner != owner:
                raise PathInUse(
                    f"{shown!r} was written by another API key's session, which this server still keeps; "
                    "choose another path",
                    field,
                )
        if any(output.collides(other) for other in self._opening):
            raise PathInUse(f"{shown!r} is being opened by another session; choose another path", field)
        if output.segments is not None:
            self._clear_segments(output, shown, field)
        else:
            self._create_file(output.path, shown, field, output.overwrite)
        self._opening.append(output)

    @staticmethod
    def _create_file(path: str, shown: str, field: str, overwrite: bool) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            _create(path)
        except FileExistsError:
            if not overwrite:
                raise PathExists(
                    f"{shown!r} exists; choose another path, or set overwrite to true to replace it", field
                ) from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a file from before: replaced (confine checked it is a regular file)
            try:
                _create(path)
            except FileExistsError:
                raise InvalidConfig(f"{shown!r} appeared again while it was being replaced", field) from None
        except OSError as exc:  # a symlink planted at the last moment (ELOOP), a parent that is a file, ...
            raise InvalidConfig(f"cannot create {shown!r}: {exc.strerror}", field) from None

    @staticmethod
    def _clear_segments(output: OutputPlan, shown: str, field: str) -> None:
        """Make the playlist's directory (through no symlink) and remove its files from before, if
        the config allows; a playlist written from scratch never lists another stream's segments."""
        segments = output.segments
        assert segments is not None
        try:
            fd = open_directory(segments.root, segments.subdir)
        except OSError as exc:
            raise InvalidConfig(f"cannot use the directory of {shown!r}: {exc.strerror}", field) from None
        try:
            existing = segments.existing()
            if existing and not output.overwrite:
                names = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
                raise PathExists(
                    f"{shown!r}: {len(existing)} files of an earlier stream of that name are there ({names}); "
                    "choose another path, or set overwrite to true to replace them",
                    field,
                )
            for name in existing:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)  # the name itself: a symlink is removed, never followed
        finally:
            os.close(fd)

    def opened(self, output: OutputPlan) -> None:
        """The session for ``output`` is open and listed: the manager's sessions guard it from now on."""
        self._forget(output)

    def abandon(self, output: OutputPlan) -> None:
        """The session for ``output`` did not open: release it and remove the file if still empty."""
        self._forget(output)
        if output.segments is not None or output.path is None:
            return
        with contextlib.suppress(OSError):
            if os.lstat(output.path).st_size == 0:
                os.unlink(output.path)

    def _forget(self, output: OutputPlan) -> None:
        self._opening = [other for other in self._opening if other is not output]


def _create(path: str) -> None:
    os.close(os.open(path, _CREATE, 0o666))
