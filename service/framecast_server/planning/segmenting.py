"""Outputs that write many files: HLS and DASH (a playlist and the segments it lists), and
recordings that rotate (``NAME-00000.mkv``, ``NAME-00001.mkv``, ...), every file named by framecast.

FFmpeg's ``hls`` and ``dash`` muxers open files of their own: each segment, the init segment, the
playlist (written to ``NAME.tmp`` and renamed over the old one, so a player never reads half a
playlist), and they delete segments that slid out of a live playlist. Every option that names
one of those files is set here, from the playlist's own path, and never taken from a config:
every file lands in the playlist's directory and its name starts with the playlist's stem, in a
charset that FFmpeg's name templates (``%05d``, ``$Number$``) read as plain text. The encoder then
opens each of those files itself (``encoder/confined.py``): only names this output owns, only in
that directory, never through a symlink.

What a config sets are typed fields (``ServerFileDestination``): ``segment_duration`` (also the
keyframe interval), ``playlist_size``, ``playlist_type`` and HLS's ``segment_format``.

A rotating recording (``segment_time``) is cut by framecast itself (``encoder/rotation.py``; FFmpeg's
``segment`` muxer holds the open file's last seconds back, so a crash lost them): a new file at the
first keyframe ``segment_time`` seconds after the last began (keyframes are planned to fall
there), each with its own header and trailer and its timestamps from zero, so each plays alone,
and each written as crash-safe as a single file would be. Its names are ``NAME-00000.EXT``, ... or
a strftime pattern (``segment_name``) of the same charset plus ``%Y %m %d %H %M %S %j``; the list
of finished files with their times is ``NAME.segments.csv`` beside them. ``retention`` (a count,
or an age) deletes the oldest as new ones begin.

Low latency: FFmpeg's hls muxer writes no partial segments (LL-HLS's ``EXT-X-PART``); the lowest
latency it gives is short segments (``segment_duration=1``: a player starts about three segments
behind the live edge). Its dash muxer has experimental low-latency modes (``ldash``, ``lhls``),
which framecast leaves off.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from framecast_server.errors import InvalidConfig

#: The segmenting muxers framecast writes, by the playlist's extension.
MUXERS = {"hls": ".m3u8", "dash": ".mpd"}
#: What SegmentPlan.muxer is for a recording that rotates (framecast cuts it: ``encoder/rotation.py``).
ROTATING = "rotating"
#: A rotating recording's list of finished segments, beside them: NAME + this.
SEGMENT_LIST = ".segments.csv"
#: strftime conversions a segment_name may use, and what each becomes.
_STRFTIME = {"Y": r"\d{4}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}", "M": r"\d{2}", "S": r"\d{2}", "j": r"\d{3}"}
_NAME_PATTERN = re.compile(r"(?:[A-Za-z0-9._-]|%[YmdHMSj])+")
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

DEFAULT_SEGMENT_SECONDS = 2.0
DEFAULT_PLAYLIST_SIZE = 6
#: Segments a live DASH playlist keeps on disk after they left the manifest (a player may still be
#: fetching one); HLS keeps one (``hls_delete_threshold``).
DASH_EXTRA_WINDOW = 2

#: What a playlist's stem may hold: nothing FFmpeg's templates read (``%``, ``$``), no separators.
_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

#: Options framecast sets itself for each muxer, and the field a config sets instead.
OWN_OPTIONS: dict[str, dict[str, str]] = {
    "hls": {
        "hls_time": "segment_duration",
        "hls_list_size": "playlist_size",
        "hls_playlist_type": "playlist_type",
        "hls_segment_type": "segment_format",
        "hls_flags": "playlist_type",
        "hls_segment_filename": "",
        "hls_fmp4_init_filename": "",
        "hls_base_url": "",
        "master_pl_name": "renditions",
        "var_stream_map": "renditions",
    },
    "dash": {
        "seg_duration": "segment_duration",
        "window_size": "playlist_size",
        "extra_window_size": "playlist_size",
        "init_seg_name": "",
        "media_seg_name": "",
        "remove_at_exit": "",
        "use_template": "",
        "use_timeline": "",
        "hls_playlist": "",
        "hls_master_name": "",
    },
}


@dataclass(frozen=True)
class SegmentPlan:
    """Where an HLS or DASH output's files go and how they are cut.

    ``root`` is the output directory, ``subdir`` the playlist's directory under it (as parts, none
    of them a symlink when planned), ``stem`` the playlist's name without its extension.
    """

    muxer: str  # "hls", "dash" or "segment" (a rotating recording)
    root: str
    subdir: tuple[str, ...]
    stem: str
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    playlist_size: int = DEFAULT_PLAYLIST_SIZE
    event: bool = False  # keep and list every segment
    segment_format: str = "fmp4"  # HLS: "fmp4" or "mpegts"; rotating: the files' muxer
    extension: str = ""  # rotating: the files' extension (".mkv")
    name_pattern: str | None = None  # rotating: a strftime pattern for the names, without extension
    keep_count: int | None = None  # rotating: keep the newest this many
    keep_seconds: float | None = None  # rotating: keep those younger than this
    #: HLS with a ladder: the variants' names (``720p``, ..., ``audio``), in ``var_stream_map`` order
    #: (audio first); the playlist is then the master, each variant has its own.
    variants: tuple[str, ...] = ()
    has_audio: bool = False  # HLS with a ladder: an audio stream, shared by every video variant

    @property
    def rotating(self) -> bool:
        return self.muxer == ROTATING

    @property
    def directory(self) -> str:
        return os.path.join(self.root, *self.subdir)

    @property
    def playlist(self) -> str:
        """The playlist, or a rotating recording's list of segments."""
        return self.stem + (SEGMENT_LIST if self.rotating else MUXERS[self.muxer])

    @property
    def target(self) -> str:
        """What the muxer is opened on: the playlist (HLS, DASH); with an HLS ladder, the variants'
        playlists (``%v``: each variant's name), the master being the playlist."""
        if self.variants and self.muxer == "hls":
            return os.path.join(self.directory, f"{self.stem}_%v{MUXERS['hls']}")
        return os.path.join(self.directory, self.playlist)

    def segment_name(self, index: int, now: float) -> str:
        """A rotating recording's ``index``-th file, begun at ``now`` (seconds since the epoch)."""
        if self.name_pattern is None:
            return f"{self.stem}-{index:05d}{self.extension}"
        return time.strftime(self.name_pattern, time.localtime(now)) + self.extension

    def another_name(self, name: str, index: int) -> str:
        """A rotating recording's file name when ``name`` is taken (a strftime pattern coarser than
        the files: two began within its resolution): ``name`` with ``-index`` before the extension."""
        return name.removesuffix(self.extension) + f"-{index}{self.extension}"

    @property
    def segment_extension(self) -> str:
        return ".ts" if self.muxer == "hls" and self.segment_format == "mpegts" else ".m4s"

    def owns(self, name: str) -> bool:
        """Whether ``name`` (a file name in ``directory``) is one of this output's files: the
        playlist, a segment or the init segment, finished (``.tmp`` ones are being written)."""
        return name == self.playlist or bool(self._pattern().fullmatch(name))

    def writes(self, name: str) -> bool:
        """Whether the muxer may open ``name`` for writing: an owned file, or its ``.tmp``."""
        return self.owns(name.removesuffix(".tmp"))

    def is_segment(self, name: str) -> bool:
        """Whether ``name`` is one of a rotating recording's files (not its list)."""
        return self.rotating and bool(self._pattern().fullmatch(name))

    def _pattern(self) -> re.Pattern[str]:
        stem = re.escape(self.stem)
        if self.rotating:
            if self.name_pattern is None:
                return re.compile(rf"{stem}-\d{{5,}}{re.escape(self.extension)}")
            parts = re.split(r"%([YmdHMSj])", self.name_pattern)
            body = "".join(_STRFTIME[p] if i % 2 else re.escape(p) for i, p in enumerate(parts))
            return re.compile(body + r"(-\d+)?" + re.escape(self.extension))  # -N: a name taken already
        if self.muxer == "hls" and self.variants:
            names = "|".join(re.escape(v) for v in self.variants)
            ext = re.escape(self.segment_extension)
            return re.compile(rf"{stem}_({names})(\.m3u8|_init\.mp4|_\d{{5,}}{ext})")
        if self.muxer == "hls":
            return re.compile(rf"{stem}_(init\.mp4|\d{{5,}}{re.escape(self.segment_extension)})")
        return re.compile(rf"{stem}-(init-\d+|\d+-\d{{5,}})\.m4s")

    def options(self) -> dict[str, str]:
        """The muxer options that name and cut every file (the server's own, set over the config's)."""
        seconds = f"{self.segment_seconds:g}"
        assert not self.rotating, "a rotating recording is cut by framecast, not a muxer"
        if self.muxer == "hls":
            flags = ["temp_file", "independent_segments"] + ([] if self.event else ["delete_segments"])
            options = {
                "hls_time": seconds,
                "hls_list_size": "0" if self.event else str(self.playlist_size),
                "hls_flags": "+".join(flags),
                "hls_segment_type": self.segment_format,
                "hls_segment_filename": os.path.join(self.directory, f"{self.stem}_%05d{self.segment_extension}"),
                "hls_fmp4_init_filename": f"{self.stem}_init.mp4",
            }
            if self.event:
                options["hls_playlist_type"] = "event"
            if self.variants:  # a ladder: a playlist per variant, the master at the config's path
                options["master_pl_name"] = self.playlist
                options["hls_segment_filename"] = os.path.join(
                    self.directory, f"{self.stem}_%v_%05d{self.segment_extension}"
                )
                options["hls_fmp4_init_filename"] = f"{self.stem}_%v_init.mp4"
                options["var_stream_map"] = self.stream_map()
            return options
        return {
            "seg_duration": seconds,
            "window_size": "0" if self.event else str(self.playlist_size),
            "extra_window_size": "0" if self.event else str(DASH_EXTRA_WINDOW),
            "remove_at_exit": "0",
            "use_template": "1",
            "use_timeline": "1",
            "init_seg_name": f"{self.stem}-init-$RepresentationID$.m4s",
            "media_seg_name": f"{self.stem}-$RepresentationID$-$Number%05d$.m4s",
        }

    def stream_map(self) -> str:
        """HLS's ``var_stream_map``: each video variant with the audio (its own rendition group)."""
        video = [v for v in self.variants if v != "audio"]
        if not self.has_audio:
            return " ".join(f"v:{i},name:{name}" for i, name in enumerate(video))
        return " ".join(
            ["a:0,agroup:audio,name:audio"] + [f"v:{i},agroup:audio,name:{name}" for i, name in enumerate(video)]
        )

    def disk_bytes(self) -> int:
        """The bytes this output's files take in its directory now."""
        total = 0
        for name in self.existing():
            try:
                total += os.lstat(os.path.join(self.directory, name)).st_size
            except FileNotFoundError:
                pass  # deleted meanwhile (a segment that left the playlist)
        return total

    def existing(self) -> list[str]:
        """The names of this output's files already in its directory (from an earlier stream)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if self.writes(name))


def plan_segments(
    muxer: str,
    root: Path,
    relative: str,
    where: str,
    segment_duration: float | None,
    playlist_size: int | None,
    playlist_type: str | None,
    segment_format: str | None,
) -> SegmentPlan:
    """The SegmentPlan of a server file written by ``muxer`` (hls or dash) at ``relative``.

    Raises:
        InvalidConfig: a playlist name FFmpeg would read as a template, or HLS's segment_format on DASH.
    """
    parts = Path(relative).parts
    name = parts[-1]
    stem, extension = os.path.splitext(name)
    if extension != MUXERS[muxer] or not _STEM.fullmatch(stem):
        raise InvalidConfig(
            f"an {muxer.upper()} playlist is NAME{MUXERS[muxer]}, NAME of letters, digits, '.', '_' and '-' "
            f"(it names the segments too), got {name!r}",
            where + ".path",
        )
    if segment_format is not None and muxer != "hls":
        raise InvalidConfig("segment_format is for HLS outputs (.m3u8)", where + ".segment_format")
    return SegmentPlan(
        muxer=muxer,
        root=str(root),
        subdir=tuple(parts[:-1]),
        stem=stem,
        segment_seconds=segment_duration or DEFAULT_SEGMENT_SECONDS,
        playlist_size=playlist_size or DEFAULT_PLAYLIST_SIZE,
        event=playlist_type == "event",
        segment_format=segment_format or "fmp4",
    )


def plan_rotation(
    muxer: str,
    root: Path,
    relative: str,
    where: str,
    segment_time: float,
    segment_name: str | None,
    retention: int | str | None,
) -> SegmentPlan:
    """The SegmentPlan of a recording that rotates every ``segment_time`` seconds.

    Raises:
        InvalidConfig: a name FFmpeg would read as a template, a pattern with other conversions
            than ``%Y %m %d %H %M %S %j``, a retention that is neither a count nor an age.
    """
    parts = Path(relative).parts
    stem, extension = os.path.splitext(parts[-1])
    if not _STEM.fullmatch(stem) or not re.fullmatch(r"\.[A-Za-z0-9]{1,10}", extension):
        raise InvalidConfig(
            f"a rotating recording is NAME.EXT, NAME of letters, digits, '.', '_' and '-' (it names the "
            f"segments), got {parts[-1]!r}",
            where + ".path",
        )
    if segment_name is not None and not _NAME_PATTERN.fullmatch(segment_name):
        raise InvalidConfig(
            f"segment_name is letters, digits, '.', '_', '-' and the strftime conversions %Y %m %d %H %M %S "
            f"%j, got {segment_name!r}",
            where + ".segment_name",
        )
    keep_count = keep_seconds = None
    if isinstance(retention, int):
        keep_count = retention
    elif retention is not None:
        match = _AGE.fullmatch(retention)
        if not match:
            raise InvalidConfig(
                f"retention is a count of files (2) or an age in seconds, minutes, hours or days ('90s', "
                f"'30m', '12h', '7d'), got {retention!r}",
                where + ".retention",
            )
        keep_seconds = float(match.group(1)) * _AGE_UNITS[match.group(2)]
    return SegmentPlan(
        muxer=ROTATING,
        root=str(root),
        subdir=tuple(parts[:-1]),
        stem=stem,
        segment_seconds=segment_time,
        segment_format=muxer,
        extension=extension,
        name_pattern=segment_name,
        keep_count=keep_count,
        keep_seconds=keep_seconds,
    )


def rotation_keyframe_seconds(segment_time: float, most: float = 2.0) -> float:
    """A keyframe interval that divides ``segment_time`` evenly and is at most ``most``: each file
    then begins on the keyframe that falls on its boundary."""
    return segment_time / max(1, math.ceil(segment_time / most))


def read_segment_list(segments: SegmentPlan, limit: int = 10000) -> list[tuple[str, float, float]]:
    """A rotating recording's finished segments that still exist, as (name, start, duration), from
    its list; [] before the first is finished."""
    try:
        with open(os.path.join(segments.directory, segments.playlist), encoding="utf-8") as listing:
            lines = listing.read().splitlines()[-limit:]
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        fields = line.rsplit(",", 2)
        if len(fields) != 3 or not segments.is_segment(fields[0]):
            continue
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            continue
        if os.path.isfile(os.path.join(segments.directory, fields[0])):
            found.append((fields[0], start, max(0.0, end - start)))
    return found


def check_options(muxer: str, options: dict[str, str], field: str) -> None:
    """Refuse the options framecast sets itself for an HLS or DASH output, naming the field to use."""
    for key in options:
        instead = OWN_OPTIONS[muxer].get(key)
        if instead is None:
            continue
        kind = muxer.upper()
        if instead:
            raise InvalidConfig(f"framecast sets {key!r} for {kind} outputs; use {instead} instead", f"{field}.{key}")
        raise InvalidConfig(
            f"{key!r} names files or URLs, and framecast names every file of an {kind} output itself", f"{field}.{key}"
        )


def only_for_rotation(fields: Mapping[str, object], where: str, kind: str) -> None:
    """The rotation fields, set without ``segment_time`` or on an output of ``kind`` (HLS and DASH
    rotate by themselves)."""
    for name, value in fields.items():
        if value is None:
            continue
        if kind:
            raise InvalidConfig(f"{name} is for single files; {kind} use segment_duration", f"{where}.{name}")
        if name != "segment_time":
            raise InvalidConfig(f"{name} is for recordings that rotate: set segment_time too", f"{where}.{name}")


def only_for_segmenting(fields: Mapping[str, object], where: str) -> None:
    """The HLS/DASH fields, set on a server file that is neither."""
    for name, value in fields.items():
        if value is not None:
            raise InvalidConfig(f"{name} is for HLS (.m3u8) and DASH (.mpd) outputs", f"{where}.{name}")


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_directory(root: str, parts: tuple[str, ...]) -> int:
    """A descriptor of ``root/parts...``, reached one part at a time, each created if missing and
    none followed if it is a symlink.

    Raises:
        OSError: a part is a symlink (ELOOP) or not a directory (ENOTDIR).
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            inner = os.open(part, _DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd
