"""FFmpeg's own option tables (AVOption), read from the libraries PyAV loaded.

Every FFmpeg object a session config reaches (a filter, an encoder, a muxer) describes its options
in a table of ``AVOption`` records: name, help text, type, the offset of the field it sets (aliases
share it), named constants for flags and enums. FFmpeg resolves a name, parses a value and applies
it with these tables, so the checks in ``allowlist.py`` ask the same tables the same questions,
through ctypes on the very libavutil, libavcodec, libavformat and libavfilter PyAV bundles (PyAV
itself no longer exposes them):

- ``FFObject.find(name)``: what ``av_opt_find2`` resolves a name to, on a real object of the kind
  FFmpeg will build: an encoder's ``AVCodecContext`` with its private context, a muxer's
  ``AVFormatContext``, a filter's ``AVFilterContext``. Nothing is opened or initialized: allocating
  these runs no encoder, muxer or filter code beyond setting defaults, so no file or socket is touched.
- ``FFObject.set(...)`` then ``get_int``/``get_dict``: the value as FFmpeg parses it (flags such as
  ``+pass1``, ``0x200`` or ``256*2`` all read back as the same bits; ``x264-params`` as the dict
  libx264 will walk), so a check never second-guesses FFmpeg's value grammar.

Only the public ``AVOption`` struct layout (unchanged since FFmpeg 7) and public functions are used.
"""

from __future__ import annotations

import abc
import ctypes
import enum
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Self

from framecast_server.planning.ffmpeg import _bundled

#: ``av_opt_find2`` search flags
SEARCH_CHILDREN = 1


class OptionType(enum.IntEnum):
    """``enum AVOptionType`` (FFmpeg 7 and later)."""

    FLAGS = 1
    INT = 2
    INT64 = 3
    DOUBLE = 4
    FLOAT = 5
    STRING = 6
    RATIONAL = 7
    BINARY = 8
    DICT = 9
    UINT64 = 10
    CONST = 11
    IMAGE_SIZE = 12
    PIXEL_FMT = 13
    SAMPLE_FMT = 14
    VIDEO_RATE = 15
    DURATION = 16
    COLOR = 17
    BOOL = 18
    CHLAYOUT = 19
    UINT = 20


#: ``AV_OPT_TYPE_FLAG_ARRAY``: the option takes a list of values of its base type
_ARRAY_FLAG = 1 << 16


class _AVOption(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("help", ctypes.c_char_p),
        ("offset", ctypes.c_int),
        ("type", ctypes.c_int),
        ("default_val", ctypes.c_int64),  # a union of int64, double, const char *, AVRational, pointer
        ("min", ctypes.c_double),
        ("max", ctypes.c_double),
        ("flags", ctypes.c_int),
        ("unit", ctypes.c_char_p),
    ]


class _AVDictionaryEntry(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_char_p)]


_OptPtr = ctypes.POINTER(_AVOption)
_EntryPtr = ctypes.POINTER(_AVDictionaryEntry)
_vp = ctypes.c_void_p


@dataclass(frozen=True)
class Option:
    """One row of an FFmpeg option table.

    ``offset`` is the field the option sets: two rows with the same offset and type are names of one
    setting (``w`` and ``width``; libx264's ``stats`` and ``passlogfile``). For a ``CONST`` row
    (a named value of the flags or enum option whose ``unit`` it shares), ``value`` is that value.
    """

    name: str
    help: str
    type: OptionType
    array: bool
    offset: int
    unit: str | None
    value: int  # the default (int-like types), or a CONST's value
    min: float = 0.0
    max: float = 0.0

    @property
    def is_const(self) -> bool:
        return self.type == OptionType.CONST


@functools.lru_cache(maxsize=1)
def _libs() -> tuple[ctypes.CDLL, ctypes.CDLL, ctypes.CDLL, ctypes.CDLL]:
    util, codec, fmt, filt = (_bundled(n) for n in ("libavutil", "libavcodec", "libavformat", "libavfilter"))
    util.av_opt_next.restype, util.av_opt_next.argtypes = _OptPtr, [_vp, _OptPtr]
    util.av_opt_child_next.restype, util.av_opt_child_next.argtypes = _vp, [_vp, _vp]
    util.av_opt_find2.restype = _OptPtr
    util.av_opt_find2.argtypes = [
        _vp,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_vp),
    ]
    util.av_opt_set.restype, util.av_opt_set.argtypes = (
        ctypes.c_int,
        [_vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int],
    )
    util.av_opt_get_int.restype = ctypes.c_int
    util.av_opt_get_int.argtypes = [_vp, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int64)]
    util.av_opt_get_double.restype = ctypes.c_int
    util.av_opt_get_double.argtypes = [_vp, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_double)]
    util.av_opt_get_dict_val.restype = ctypes.c_int
    util.av_opt_get_dict_val.argtypes = [_vp, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_vp)]
    util.av_dict_iterate.restype, util.av_dict_iterate.argtypes = _EntryPtr, [_vp, _EntryPtr]
    util.av_dict_free.restype, util.av_dict_free.argtypes = None, [ctypes.POINTER(_vp)]
    util.av_strerror.restype = ctypes.c_int
    util.av_strerror.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    codec.avcodec_find_encoder_by_name.restype = _vp
    codec.avcodec_find_encoder_by_name.argtypes = [ctypes.c_char_p]
    codec.avcodec_alloc_context3.restype, codec.avcodec_alloc_context3.argtypes = _vp, [_vp]
    codec.avcodec_free_context.restype, codec.avcodec_free_context.argtypes = None, [ctypes.POINTER(_vp)]
    fmt.avformat_alloc_output_context2.restype = ctypes.c_int
    fmt.avformat_alloc_output_context2.argtypes = [ctypes.POINTER(_vp), _vp, ctypes.c_char_p, ctypes.c_char_p]
    fmt.avformat_free_context.restype, fmt.avformat_free_context.argtypes = None, [_vp]
    filt.avfilter_get_by_name.restype, filt.avfilter_get_by_name.argtypes = _vp, [ctypes.c_char_p]
    filt.avfilter_graph_alloc.restype, filt.avfilter_graph_alloc.argtypes = _vp, []
    filt.avfilter_graph_alloc_filter.restype = _vp
    filt.avfilter_graph_alloc_filter.argtypes = [_vp, _vp, ctypes.c_char_p]
    filt.avfilter_graph_free.restype, filt.avfilter_graph_free.argtypes = None, [ctypes.POINTER(_vp)]
    return util, codec, fmt, filt


def _option(raw: _AVOption) -> Option:
    kind = raw.type & ~_ARRAY_FLAG
    return Option(
        name=(raw.name or b"").decode(),
        help=(raw.help or b"").decode(errors="replace"),
        type=OptionType(kind) if kind in OptionType._value2member_map_ else OptionType.BINARY,
        array=bool(raw.type & _ARRAY_FLAG),
        offset=raw.offset,
        unit=raw.unit.decode() if raw.unit else None,
        value=raw.default_val,
        min=raw.min,
        max=raw.max,
    )


def _error_text(code: int) -> str:
    buf = ctypes.create_string_buffer(256)
    _libs()[0].av_strerror(code, buf, len(buf))
    return buf.value.decode(errors="replace")


Scope = Literal["generic", "private"]

#: option tables read so far: (object kind, name, scope) -> rows
_TABLES: dict[tuple[str, str, str], list[Option]] = {}


@dataclass(frozen=True)
class Found:
    """Where a name landed: in the object's own (generic) table or its private one, and as what."""

    scope: Scope
    option: Option


class FFObject(abc.ABC):
    """A freshly allocated, never initialized FFmpeg object and its private context.

    ``generic`` is the object itself (``AVCodecContext``, ``AVFormatContext``, ``AVFilterContext``),
    ``private`` the encoder's, muxer's or filter's own context (``priv_data``/``priv``), or None.
    Use as a context manager; the object is freed on exit.
    """

    kind: str = "object"

    def __init__(self, name: str) -> None:
        self.name = name
        self.generic: int = 0
        self.private: int | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None:
        """Free the object (each kind has its own FFmpeg function for it)."""

    def _obj(self, scope: Scope) -> int | None:
        return self.generic if scope == "generic" else self.private

    def options(self, scope: Scope) -> list[Option]:
        """Every row of one table, in declared order (constants included).

        Tables are static data of the FFmpeg build, so they are read once per object kind and name.
        """
        key = (self.kind, self.name, scope)
        if key not in _TABLES:
            _TABLES[key] = self._read_options(scope)
        return _TABLES[key]

    def _read_options(self, scope: Scope) -> list[Option]:
        obj = self._obj(scope)
        if not obj:
            return []
        util = _libs()[0]
        rows: list[Option] = []
        cur = _OptPtr()
        while True:
            cur = util.av_opt_next(obj, cur)
            if not cur:
                return rows
            rows.append(_option(cur.contents))

    def find(self, name: str) -> list[Found]:
        """Every table ``name`` resolves in, as ``av_opt_find2`` resolves it (constants are not settable).

        The generic table is searched without children (as ``avcodec_open2``, ``avformat_write_header``
        apply options to it); the private context with its children (as FFmpeg applies them there).
        Both can match: FFmpeg then sets one of them, so callers check both.
        """
        util = _libs()[0]
        hits = []
        searches: tuple[tuple[Scope, int], ...] = (("generic", 0), ("private", SEARCH_CHILDREN))
        for scope, flags in searches:
            obj = self._obj(scope)
            if not obj:
                continue
            found = util.av_opt_find2(obj, name.encode(), None, 0, flags, None)
            if found:
                hits.append(Found(scope, _option(found.contents)))
        return hits

    def aliases(self, found: Found) -> list[str]:
        """The names of one setting: every non-constant row of its table with its offset and type."""
        return [
            o.name
            for o in self.options(found.scope)
            if not o.is_const and o.offset == found.option.offset and o.type == found.option.type
        ]

    def constants(self, scope: Scope, unit: str) -> list[Option]:
        """The named values of a flags or enum option (the CONST rows of its unit)."""
        return [o for o in self.options(scope) if o.is_const and o.unit == unit]

    def set(self, scope: Scope, name: str, value: str) -> str | None:
        """Set ``name`` as FFmpeg would (``av_opt_set``); FFmpeg's error text if it refuses the value."""
        obj = self._obj(scope)
        flags = SEARCH_CHILDREN if scope == "private" else 0
        code = _libs()[0].av_opt_set(obj, name.encode(), value.encode(), flags)
        return None if code >= 0 else _error_text(code)

    def get_int(self, scope: Scope, name: str) -> int:
        out = ctypes.c_int64()
        flags = SEARCH_CHILDREN if scope == "private" else 0
        if _libs()[0].av_opt_get_int(self._obj(scope), name.encode(), flags, ctypes.byref(out)) < 0:
            raise ValueError(f"{name} is not an integer option")
        return out.value

    def get_double(self, scope: Scope, name: str) -> float:
        out = ctypes.c_double()
        flags = SEARCH_CHILDREN if scope == "private" else 0
        if _libs()[0].av_opt_get_double(self._obj(scope), name.encode(), flags, ctypes.byref(out)) < 0:
            raise ValueError(f"{name} is not a number option")
        return out.value

    def get_dict(self, scope: Scope, name: str) -> list[tuple[str, str]]:
        """A dict option's entries, in FFmpeg's order (which is what the encoder library walks)."""
        util = _libs()[0]
        flags = SEARCH_CHILDREN if scope == "private" else 0
        dct = _vp()
        if util.av_opt_get_dict_val(self._obj(scope), name.encode(), flags, ctypes.byref(dct)) < 0:
            raise ValueError(f"{name} is not a dictionary option")
        entries, cur = [], _EntryPtr()
        try:
            while dct.value:
                cur = util.av_dict_iterate(dct, cur)
                if not cur:
                    break
                entries.append((cur.contents.key.decode(errors="replace"), cur.contents.value.decode(errors="replace")))
        finally:
            util.av_dict_free(ctypes.byref(dct))
        return entries


class Encoder(FFObject):
    """An encoder's ``AVCodecContext`` (generic options) and its private context, as allocated."""

    kind = "encoder"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        util, codec, _, _ = _libs()
        found = codec.avcodec_find_encoder_by_name(name.encode())
        if not found:
            raise LookupError(f"no encoder {name!r}")
        self.generic = codec.avcodec_alloc_context3(found)
        if not self.generic:
            raise MemoryError("avcodec_alloc_context3")
        self.private = util.av_opt_child_next(self.generic, None)

    def close(self) -> None:
        if self.generic:
            ctx = _vp(self.generic)
            _libs()[1].avcodec_free_context(ctypes.byref(ctx))
            self.generic = 0


class Muxer(FFObject):
    """A muxer's ``AVFormatContext`` (generic options) and its private context, as allocated."""

    kind = "muxer"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        util, _, fmt, _ = _libs()
        ctx = _vp()
        if fmt.avformat_alloc_output_context2(ctypes.byref(ctx), None, name.encode(), None) < 0 or not ctx.value:
            raise LookupError(f"no muxer {name!r}")
        self.generic = ctx.value
        self.private = util.av_opt_child_next(self.generic, None)

    def close(self) -> None:
        if self.generic:
            _libs()[2].avformat_free_context(self.generic)
            self.generic = 0


class Filter(FFObject):
    """A filter's ``AVFilterContext`` (generic options: ``enable``, ``threads``...) and its private
    context, allocated in a graph of its own and never initialized (``init`` is where filters open files)."""

    kind = "filter"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        util, _, _, filt = _libs()
        found = filt.avfilter_get_by_name(name.encode())
        if not found:
            raise LookupError(f"no filter {name!r}")
        self._graph = _vp(filt.avfilter_graph_alloc())
        util.av_opt_set(self._graph, b"thread_type", b"0", 0)  # no slice-thread pool for a probe
        self.generic = filt.avfilter_graph_alloc_filter(self._graph, found, b"probe")
        if not self.generic:
            self.close()
            raise MemoryError("avfilter_graph_alloc_filter")
        self.private = util.av_opt_child_next(self.generic, None)

    def close(self) -> None:
        if self._graph.value:
            _libs()[3].avfilter_graph_free(ctypes.byref(self._graph))
        self.generic = 0

    def shorthand(self) -> list[Option]:
        """The options positional arguments fill, in order (``filter_shorthand``)."""
        return list(filter_shorthand(self.name))


@functools.cache
def filter_table(name: str) -> tuple[tuple[Option, ...], tuple[Option, ...]]:
    """(generic, private) option rows of filter ``name``; cached, as tables never change at runtime."""
    with Filter(name) as f:
        return tuple(f.options("generic")), tuple(f.options("private"))


@functools.cache
def filter_shorthand(name: str) -> tuple[Option, ...]:
    """The options that positional arguments of filter ``name`` fill, in order: the private table's
    non-constant rows, each setting once (an alias right after its option is skipped), as FFmpeg's
    ``ff_filter_opt_parse`` walks them."""
    out: list[Option] = []
    offset = -1
    for o in filter_table(name)[1]:
        if o.is_const or o.offset == offset:
            continue
        offset = o.offset
        out.append(o)
    return tuple(out)


def iter_tables(obj: FFObject) -> Iterator[tuple[Scope, Option]]:
    """Every (scope, row) of an object: its generic table, then its private one."""
    scopes: tuple[Scope, ...] = ("generic", "private")
    for scope in scopes:
        for o in obj.options(scope):
            yield scope, o
