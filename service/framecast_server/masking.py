"""Keeping destination secrets out of everything the server shows or logs.

A destination URL may carry credentials in three places: ``user:password@`` before the host, the
query (``?key=...``, srt's ``passphrase`` and ``streamid``) and, for RTMP, the path: the stream key
is the playpath (``rtmp://host/live/KEY``; with a single segment, ``rtmp://host/KEY``, that segment).
FFmpeg quotes URLs in its own error lines (``Connection to tcp://user:pass@host:port?... failed``),
so masking the listing is not enough.

- ``masked(url)`` is how a URL is shown: scheme, host, port and, for RTMP, the application only.
  It never raises, whatever the string.
- ``Redactor(urls)`` masks one session's URLs in free text: the URL itself, then every
  ``scheme://...`` in the text (``masked`` again), then the URL's secrets wherever they stand alone.
- ``hide_in_process(urls)``: an encoder process serves one session, and everything it says reaches
  the server through its error texts (``redact``, which ``encoder.describe_error`` applies) and its
  stderr, which is the server's log; from this call on both are masked.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterable
from typing import TextIO
from urllib.parse import unquote

from framecast_server.planning.urls import SECRET_OPTIONS

#: What replaces a secret.
MASK = "****"

#: Secrets shorter than this are replaced only inside URLs, not wherever their letters occur in
#: text: replacing every "ab" of a message would hide it without hiding anything.
MIN_SECRET = 4

#: scheme ':' '//'? authority (up to '/', '?', '#') path (up to '?', '#') and the rest
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<slashes>/*)(?P<authority>[^/?#]*)(?P<path>[^?#]*)", re.DOTALL
)

#: A URL in free text: a scheme, '://', and everything up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*")

#: Punctuation a sentence puts after a URL, which is not part of it.
_TRAILING = re.compile(r"[.,;:!?)\]}]+$")


def masked(url: str) -> str:
    """``url`` without user info, query or fragment, and with RTMP stream keys replaced by ``****``.

    ``rtmp://user:pw@host:1935/live/KEY?token=t`` becomes ``rtmp://host:1935/live/****``;
    ``rtmp://host/KEY`` and ``rtmp://host/live/KEY/`` become ``rtmp://host/****`` and
    ``rtmp://host/live/****``. Characters outside printable ASCII are percent-encoded, so a shown
    URL is always one line. Text that is no URL at all becomes ``****``. Never raises.
    """
    try:
        match = _URL.match(url)
        if match is None:
            return MASK if url else ""
        scheme = match["scheme"]
        host = match["authority"].rpartition("@")[2]
        path = match["path"]
        if scheme.lower() in ("rtmp", "rtmps"):
            path = _rtmp_app(path)
        return _printable(f"{scheme}:{match['slashes']}{host}{path}")
    except Exception:  # masking must never be what breaks a listing
        return MASK


def _rtmp_app(path: str) -> str:
    """``/app/****`` of ``/app/KEY...``: the application stays, everything after it is masked."""
    segments = [s for s in path.split("/") if s]
    if not segments:
        return path
    if len(segments) == 1:
        return f"/{MASK}"
    return f"/{segments[0]}/{MASK}"


def _printable(text: str) -> str:
    return "".join(
        c if " " < c < "\x7f" else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in text
    )


def scrub(text: str) -> str:
    """``text`` with every ``scheme://...`` in it masked: the pass for text about no known URL."""

    def one(match: re.Match[str]) -> str:
        token = match.group()
        tail = _TRAILING.search(token)
        if tail:
            token, after = token[: tail.start()], tail.group()
        else:
            after = ""
        return masked(token) + after

    return _URL_IN_TEXT.sub(one, text)


class Redactor:
    """Masks a session's destination URLs, and each of their secrets, in any text.

    Args:
        urls: the URLs as FFmpeg was given them (one, or None for outputs that are not URLs:
            then only the generic ``scrub`` applies).
        secrets: other secrets of the session's destinations (a WHIP bearer token).
    """

    def __init__(self, urls: str | Iterable[str | None] | None, secrets: Iterable[str] = ()) -> None:
        given = [urls] if isinstance(urls, str) or urls is None else list(urls)
        found = [url for url in given if url]
        self._literals: list[tuple[str, str]] = [(url, masked(url)) for url in found]
        hidden = {secret for url in found for secret in _secrets_of(url)} | {s for s in secrets if s}
        self._secrets = sorted(hidden, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for literal, shown in self._literals:
            text = text.replace(literal, shown)
        text = scrub(text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def _secrets_of(url: str) -> set[str]:
    """User info, password, query values and RTMP stream keys of ``url``, as written and decoded."""
    match = _URL.match(url)
    if match is None:
        return set()
    found: set[str] = set()
    userinfo, at, _ = match["authority"].rpartition("@")
    if at:
        found.add(userinfo)
        found.add(userinfo.partition(":")[2])
    rtmp = match["scheme"].lower() in ("rtmp", "rtmps")
    query = url[match.end() :].partition("#")[0]
    if query.startswith("?"):
        pairs = [pair.partition("=") for pair in query[1:].split("&")]
        # RTMP's query is part of the stream name; other protocols' options are settings, some secret
        secret = [value for key, _, value in pairs if rtmp or key in SECRET_OPTIONS]
        found.update(secret)
        if secret:
            found.add(query[1:])
    if rtmp:
        segments = [s for s in match["path"].split("/") if s]
        hidden = segments[1:] if len(segments) > 1 else segments
        found.add("/".join(hidden))
        found.update(hidden)
    found |= {unquote(s) for s in found} | {unquote(s.replace("+", " ")) for s in found}
    return {s for s in found if len(s) >= MIN_SECRET}


#: This process's redactor (``hide_in_process``); until then only the generic pass applies.
_process_redactor: Redactor = Redactor(None)


def redact(text: str) -> str:
    """``text`` with this process's destination secrets masked (``hide_in_process``) and every
    URL in it shown as ``masked`` shows URLs."""
    return _process_redactor(text)


def hide_in_process(urls: Iterable[str | None], secrets: Iterable[str] = ()) -> None:
    """Mask ``urls`` in everything this process says from now on: ``redact`` and its stderr.

    For an encoder process, which serves exactly one session. stderr is replaced by a stream that
    masks each line before it reaches the server's log (FFmpeg's lines come through Python logging,
    whose handlers and tracebacks write to ``sys.stderr``).
    """
    global _process_redactor
    _process_redactor = Redactor(urls, secrets)
    if isinstance(sys.stderr, RedactingStream):
        sys.stderr.redact = _process_redactor
    elif sys.stderr is not None:
        sys.stderr = RedactingStream(sys.stderr, _process_redactor)


class RedactingStream(io.TextIOBase):
    """A text stream that masks each complete line before writing it to ``target``.

    Lines are held until their newline (or a flush), so a URL written in two pieces is still
    masked as one.
    """

    def __init__(self, target: TextIO, redact: Redactor) -> None:
        super().__init__()
        self.target = target
        self.redact = redact
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self.target.write(self.redact(complete + "\n"))
            self.target.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.target.write(self.redact(self._pending))
            self._pending = ""
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")
