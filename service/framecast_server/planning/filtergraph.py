"""FFmpeg's filter graph grammar, for the linear chains a stream's ``filter_desc`` may hold.

A ``filter_desc`` is read exactly as ``avfilter_graph_segment_parse`` (what ``ffmpeg -vf`` and
torchaudio's StreamWriter use) reads it, in two levels of ``av_get_token``:

1. the graph: filters separated by ``,`` (``;`` chains and ``[label]`` pads are refused: a stream
   has one input and one output), each ``name[@instance]`` optionally followed by ``=`` and its
   arguments, which end at an unquoted, unescaped ``[``, ``]``, ``,`` or ``;``;
2. the arguments: ``:``-separated values, each ``key=value`` or a bare value for the filter's next
   positional option (its option table in declared order, aliases counted once), until the first
   explicit key (``ff_filter_opt_parse``).

At each level ``'...'`` quotes and ``\\x`` escapes are removed, so ``curves=plot='/x'`` sets ``plot``
to ``/x`` and ``curves=plot\\=/x`` is a positional value ``plot=/x``: the checks see option names
and values as FFmpeg will set them. ``FilterStep.args()`` writes a parsed filter back with every
option named and every special character escaped, which is what the encoder process hands to
FFmpeg: it sets exactly the options that were checked, whatever the original spelling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: what av_get_token and the graph parser skip (libavutil's WHITESPACES)
WHITESPACES = " \n\t\r"
#: characters av_opt_get_key_value accepts in an option name (``is_key_char``)
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/.")


class FilterSyntaxError(ValueError):
    """The description is not a linear chain FFmpeg would parse; the message says where."""


def get_token(text: str, pos: int, term: str) -> tuple[str, int]:
    """``av_get_token``: the token at ``pos`` up to an unquoted, unescaped ``term`` character.

    Leading whitespace is skipped, ``\\x`` yields ``x``, ``'...'`` yields its content verbatim,
    trailing whitespace that was neither escaped nor quoted is dropped. Returns the token and the
    position of the terminator (or the end).
    """
    while pos < len(text) and text[pos] in WHITESPACES:
        pos += 1
    out: list[str] = []
    end = 0  # length of out that trailing-whitespace trimming must keep
    while pos < len(text) and text[pos] not in term:
        c = text[pos]
        pos += 1
        if c == "\\" and pos < len(text):
            out.append(text[pos])
            pos += 1
            end = len(out)
        elif c == "'":
            while pos < len(text) and text[pos] != "'":
                out.append(text[pos])
                pos += 1
            if pos < len(text):
                pos += 1
                end = len(out)
        else:
            out.append(c)
    while len(out) > end and out[-1] in WHITESPACES:
        out.pop()
    return "".join(out), pos


def escape(value: str) -> str:
    """The inverse of ``get_token(..., term=":")``: ``value`` escaped so it reads back unchanged."""
    return "".join("\\" + c if c in "\\':" or c in WHITESPACES else c for c in value)


@dataclass
class FilterStep:
    """One filter of a chain: its name and its options as (name, value) pairs, in order.

    ``positional`` holds how many of the leading pairs were given without a name (for messages).
    """

    name: str
    options: list[tuple[str, str]] = field(default_factory=list)
    positional: int = 0

    def args(self) -> str | None:
        """The options as an argument string FFmpeg parses back to exactly these pairs."""
        if not self.options:
            return None
        for key, _ in self.options:
            if not key or not set(key) <= _KEY_CHARS:
                raise FilterSyntaxError(f"option name {key!r} of {self.name!r} cannot be written back")
        return ":".join(f"{key}={escape(value)}" for key, value in self.options)


@dataclass
class RawFilter:
    """A filter as the graph level reads it: name, instance name, argument string (still escaped)."""

    name: str
    instance: str | None
    args: str | None


def split_graph(desc: str) -> list[RawFilter]:
    """The graph level: a linear chain of ``name[@instance][=args]`` separated by ``,``."""
    pos = 0
    n = len(desc)
    while pos < n and desc[pos] in WHITESPACES:
        pos += 1
    if desc.startswith("sws_flags=", pos):
        raise FilterSyntaxError("'sws_flags=' graph options are not allowed; set scale's flags= instead")
    chain: list[RawFilter] = []
    while True:
        while pos < n and desc[pos] in WHITESPACES:
            pos += 1
        if pos < n and desc[pos] == "[":
            raise FilterSyntaxError("only a linear chain of filters is allowed (no [labels] or ';')")
        name, pos = get_token(desc, pos, "=,;[")
        args = None
        if pos < n and desc[pos] == "=":
            args, pos = get_token(desc, pos + 1, "[],;")
        while pos < n and desc[pos] in WHITESPACES:
            pos += 1
        if pos < n and desc[pos] in "[];":
            raise FilterSyntaxError("only a linear chain of filters is allowed (no [labels] or ';')")
        base, at, instance = name.partition("@")
        if not base:
            raise FilterSyntaxError(f"empty filter name in chain, at character {pos}")
        chain.append(RawFilter(base, instance if at else None, args))
        if pos >= n:
            return chain
        if desc[pos] != ",":  # pragma: no cover - get_token stops only at its terminators
            raise FilterSyntaxError(f"unexpected {desc[pos]!r} at character {pos}")
        pos += 1
        if pos >= n or not desc[pos:].strip(WHITESPACES):
            raise FilterSyntaxError("empty filter in chain (a trailing ',')")


def _get_key(args: str, pos: int) -> tuple[str, int] | None:
    """``get_key``: an option name followed by ``=`` at ``pos``, or None if there is none."""
    n = len(args)
    while pos < n and args[pos] in WHITESPACES:
        pos += 1
    start = pos
    while pos < n and args[pos] in _KEY_CHARS:
        pos += 1
    key = args[start:pos]
    while pos < n and args[pos] in WHITESPACES:
        pos += 1
    if pos >= n or args[pos] != "=":
        return None
    return key, pos + 1


def split_options(args: str | None, shorthand: list[str], filter_name: str) -> FilterStep:
    """The option level (``ff_filter_opt_parse``): ``args`` into named options.

    ``shorthand`` are the names positional values fill, in order (``avoptions.Filter.shorthand``).
    After the first ``key=value``, values must be named.
    """
    step = FilterStep(filter_name)
    if not args:
        return step
    pos, n = 0, len(args)
    positional = True
    index = 0
    while pos < n:
        implicit = shorthand[index] if positional and index < len(shorthand) else None
        index += 1
        keyed = _get_key(args, pos)
        if keyed is not None:
            key, pos = keyed
        elif implicit is None:
            raise FilterSyntaxError(
                f"{filter_name}: no option name near {args[pos : pos + 40]!r} (it takes "
                f"{len(shorthand)} positional value{'s' if len(shorthand) != 1 else ''}; name the rest as key=value)"
            )
        else:
            key = implicit
        value, pos = get_token(args, pos, ":")
        if pos < n:
            pos += 1  # the ':'
        if keyed is not None:
            positional = False
        else:
            step.positional += 1
        step.options.append((key, value))
    return step
