"""The files of an HLS or DASH output, each opened by the encoder itself, inside its directory.

FFmpeg's segmenting muxers open every file they write through the container's ``io_open``
callback (PyAV's ``av.open(..., io_open=)``): segments, the init segment, the playlist's ``.tmp``
before it is renamed over the playlist. ``ConfinedFiles`` is that callback. It opens a file only
when it is one this output owns (``SegmentPlan.writes``: a name made of the playlist's stem, in
the playlist's directory), only for writing, relative to a descriptor of that directory reached
from the output directory one component at a time without following a symlink, and with
``O_NOFOLLOW`` itself: a symlink planted anywhere on the way is an error, never a way out. Whatever
muxer option went wrong, whatever name FFmpeg made of it, nothing else can be opened.

(The muxers also rename a ``.tmp`` over its file and delete segments that left a live playlist;
both act on the name itself, never through a symlink's target, and on names made here.)
"""

from __future__ import annotations

import os
import stat
from typing import Any, BinaryIO

from framecast_server.planning.segmenting import SegmentPlan, open_directory

_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
#: FFmpeg's AVIO_FLAG_READ.
_AVIO_READ = 1


class ConfinedFiles:
    """PyAV's ``io_open`` for one HLS or DASH output: opens its own files and nothing else."""

    def __init__(self, segments: SegmentPlan) -> None:
        self.segments = segments
        self.directory = os.path.normpath(segments.directory)
        self._dir_fd = open_directory(segments.root, segments.subdir)

    def __call__(self, url: str, flags: int, options: dict[str, Any]) -> BinaryIO:
        path = url.removeprefix("file:")
        directory, name = os.path.split(os.path.normpath(path))
        if directory != self.directory or not self.segments.writes(name):
            raise PermissionError(f"{url!r} is not a file of this {self.segments.muxer.upper()} output")
        if flags & _AVIO_READ:
            raise PermissionError(f"{name!r}: the output's files are opened for writing only")
        try:
            fd = os.open(name, _WRITE, 0o644, dir_fd=self._dir_fd)
        except OSError as exc:
            if exc.errno == 40:  # ELOOP: a symlink stands where the file goes
                raise PermissionError(f"{name!r} is a symlink in the output directory; not followed") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PermissionError(f"{name!r} is not a regular file")
        return os.fdopen(fd, "wb", buffering=0)  # what the muxer flushes is in the file: crash safety

    def close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
