"""Network destination URLs: read them exactly as FFmpeg will, or refuse them.

A host allowlist is only as good as the parser behind it. Python's ``urlsplit`` and FFmpeg's
``av_url_split`` disagree on plenty of inputs: FFmpeg stops at a NUL byte (``tcp://127.0.0.1:9\\0@
allowed.example`` connects to 127.0.0.1 while ``urlsplit`` sees ``allowed.example``), ``urlsplit``
silently drops tabs and newlines, FFmpeg reads a port with ``atoi`` (``:+12``, ``:12abc``, ``:``),
and so on. So a URL is accepted only when

1. it is plain printable ASCII from RFC 3986's URL characters, without ``#``, backslash, space,
   control characters or anything else either parser might treat specially;
2. ``urlsplit`` and FFmpeg's own ``av_url_split`` (called through ctypes, ``ffmpeg.url_split``)
   agree on its scheme, user info, host, port and path;
3. the host is a DNS name (letters, digits, ``-`` and ``_`` in dot-separated labels, no trailing
   dot), a canonical dotted-quad IPv4 address, or a bracketed IPv6 address; a host whose last label
   starts with a digit must be a dotted quad, because the resolver also takes ``127.1``,
   ``0x7f.0.0.1`` and ``2130706433`` as addresses;
4. the port, when there is one, is 1 to 65535 in decimal digits (tcp, udp and srt need one);
5. tcp, udp and srt take no path, and only the query options in ``QUERY_OPTIONS``: these protocols
   read options from the query, and some of them make FFmpeg listen or bind (tcp's ``listen``,
   udp's ``localaddr``/``localport``, srt's ``mode=listener``). RTMP's query is part of its
   application or stream name and goes to the RTMP server, so it is left alone.

The host allowed-hosts patterns (``HostPattern``) are matched against is FFmpeg's host.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from framecast_server.errors import InvalidConfig
from framecast_server.planning import ffmpeg

#: Schemes whose URLs this module reads. Each has its own FFmpeg protocol, but RTSP, which is a
#: muxer over FFmpeg's tcp (rtsps: tls) protocol.
SCHEMES = ("rtmp", "rtmps", "rtsp", "rtsps", "whip+http", "whip+https", "udp", "tcp", "srt")

#: Schemes that need an explicit port: FFmpeg has no default for them.
_NEEDS_PORT = {"udp", "tcp", "srt"}

#: Longest URL taken (FFmpeg's protocols keep host and path in buffers of about 1 KiB).
MAX_URL_LENGTH = 2048


def _integer(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 10


def _boolean(value: str) -> bool:
    return value in ("0", "1")


def _text(value: str) -> bool:
    return len(value) <= 512  # its characters were checked with the whole URL


def _rtsp_transport(value: str) -> bool:
    return value in ("tcp", "udp")


def _transtype(value: str) -> bool:
    return value in ("live", "file")


#: Query options FFmpeg's tcp, udp and srt protocols may be given in a destination URL, with a check
#: of their value. Everything else is refused: a new option is added here once someone has read
#: what it does. Left out on purpose: tcp ``listen``, ``listen_timeout``, ``local_addr``,
#: ``local_port``; udp ``localaddr``, ``localport``, ``connect``, ``reuse``, ``broadcast``,
#: ``sources``, ``block``; srt ``mode`` (listener, rendezvous) and its local address.
QUERY_OPTIONS: dict[str, dict[str, Callable[[str], bool]]] = {
    "tcp": {
        "timeout": _integer,
        "tcp_nodelay": _boolean,
        "tcp_mss": _integer,
        "send_buffer_size": _integer,
        "recv_buffer_size": _integer,
    },
    "udp": {
        "pkt_size": _integer,
        "ttl": _integer,
        "buffer_size": _integer,
        "bitrate": _integer,
        "burst_bits": _integer,
        "dscp": _integer,
    },
    # Not FFmpeg's: taken out of the URL by ``destinations.network_url`` and given to the rtsp
    # muxer as its option (FFmpeg would send it to the server as part of the path).
    "rtsp": {"rtsp_transport": _rtsp_transport},
    "rtsps": {"rtsp_transport": _rtsp_transport},
    "srt": {
        "passphrase": _text,
        "pbkeylen": _integer,
        "latency": _integer,
        "rcvlatency": _integer,
        "peerlatency": _integer,
        "tlpktdrop": _boolean,
        "nakreport": _boolean,
        "connect_timeout": _integer,
        "maxbw": _integer,
        "inputbw": _integer,
        "oheadbw": _integer,
        "payload_size": _integer,
        "pkt_size": _integer,
        "mss": _integer,
        "ffs": _integer,
        "ipttl": _integer,
        "iptos": _integer,
        "sndbuf": _integer,
        "rcvbuf": _integer,
        "streamid": _text,
        "enforced_encryption": _boolean,
        "transtype": _transtype,
        "linger": _integer,
        "kmrefreshrate": _integer,
        "kmpreannounce": _integer,
        "snddropdelay": _integer,
        "timeout": _integer,
    },
}

#: Query options whose values are secrets: masked wherever text about the session is shown.
SECRET_OPTIONS = frozenset({"passphrase", "streamid"})

#: RFC 3986's characters (unreserved, reserved and '%'), less '#': a fragment means nothing to an
#: output, and FFmpeg and ``urlsplit`` would end the path at different places around one.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]*")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_QUERY_KEY = re.compile(r"[a-z_]{1,64}")


@dataclass(frozen=True)
class NetworkUrl:
    """A destination URL as FFmpeg will read it.

    Attributes:
        url: the URL to hand to FFmpeg (the scheme in lower case, otherwise as given).
        scheme: one of ``SCHEMES``.
        host: FFmpeg's host, lower case, IPv6 without brackets.
        address: the host as an IP address, None for a DNS name.
        port: None when the URL names none (RTMP's default then applies).
        userinfo: ``user[:password]`` before the host, '' for none.
        path: everything after the host up to the query ('' for none).
        query: the query's ``(key, value)`` pairs as FFmpeg reads them (no percent-decoding).
        raw_query: the query as written, without its '?'; None when the URL has none.
    """

    url: str
    scheme: str
    host: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    port: int | None
    userinfo: str
    path: str
    query: tuple[tuple[str, str], ...]
    raw_query: str | None


def scheme_of(url: str) -> str:
    """The lower-case scheme ``url`` starts with (``rtmp`` of ``rtmp://...``, ``pipe`` of ``pipe:1``);
    '' for none. Never raises: callers check it against their allowlists before parsing."""
    head = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
    return head.group(1).lower() if head else ""


def parse(url: str, field: str = "destination.url") -> NetworkUrl:
    """Read ``url`` as FFmpeg will; InvalidConfig naming ``field`` for anything ambiguous or malformed.

    The scheme must be one of ``SCHEMES`` (callers check it against their allowlists first, with
    their own messages). The error messages quote the part that is wrong, never the whole URL,
    which may hold credentials.
    """
    if len(url) > MAX_URL_LENGTH:
        raise InvalidConfig(f"URL too long: at most {MAX_URL_LENGTH} characters, got {len(url)}", field)
    _check_characters(url, field)
    head = _SCHEME.match(url)
    if head is None:
        raise InvalidConfig(
            "expected a URL of the form scheme://host[:port]/..., e.g. rtmp://ingest.example.com/live/KEY", field
        )
    scheme = head.group(1).lower()
    if scheme not in SCHEMES:
        raise InvalidConfig(f"unsupported URL scheme {scheme!r}; expected one of {', '.join(SCHEMES)}", field)
    url = scheme + url[len(scheme) :]  # FFmpeg matches protocol names case-sensitively
    netloc = re.match(r"[^/?]*", url[len(scheme) + 3 :]).group()  # type: ignore[union-attr]  # '#' is refused
    userinfo, _, hostport = netloc.rpartition("@")
    if not hostport:
        raise InvalidConfig(
            f"{scheme} URL needs a host, e.g. {scheme}://ingest.example.com"
            f"{':PORT' if scheme in _NEEDS_PORT else '/live/KEY'}",
            field,
        )
    host, port = _host_and_port(hostport, scheme, field)
    try:
        ours = urlsplit(url)
        our_port = ours.port
    except ValueError as exc:  # what _host_and_port let through and urlsplit does not take
        raise InvalidConfig(f"malformed {scheme} URL: {exc}", field) from None
    theirs = ffmpeg.url_split(url)
    rest = url[len(scheme) + 3 + len(netloc) :]
    agree = (
        theirs.proto == scheme
        and theirs.authorization == userinfo
        and theirs.hostname.lower() == host
        and theirs.port == (-1 if port is None else port) == (-1 if our_port is None else our_port)
        and theirs.path == rest
        and ours.netloc == netloc
        and (ours.hostname or "") == host
    )
    if not agree:
        raise InvalidConfig(
            f"FFmpeg would read this URL differently (host {theirs.hostname!r}, port {theirs.port}) than "
            f"the checks here (host {host!r}, port {port}); write it plainly",
            field,
        )
    path, question, raw_query = rest.partition("?")
    query = _query(scheme, path, raw_query if question else None, field)
    return NetworkUrl(
        url=url,
        scheme=scheme,
        host=host,
        address=_address(host),
        port=port,
        userinfo=userinfo,
        path=path,
        query=query,
        raw_query=raw_query if question else None,
    )


def _check_characters(url: str, field: str) -> None:
    bad = _URL_CHARS.match(url)
    assert bad is not None  # '*' matches the empty string
    if bad.end() < len(url):
        char = url[bad.end()]
        what = {
            "\x00": "a NUL byte",
            "\\": "a backslash",
            " ": "a space",
            "#": "a '#'",
            "\t": "a tab",
            "\n": "a newline",
            "\r": "a carriage return",
        }.get(char, f"the character {char!r}")
        raise InvalidConfig(
            f"URL contains {what} at position {bad.end()}; URLs here are plain ASCII without spaces, control "
            "characters, '#' or backslashes (percent-encode such characters in the stream key or query)",
            field,
        )


def _host_and_port(hostport: str, scheme: str, field: str) -> tuple[str, int | None]:
    """The lower-case host (IPv6 without brackets) and the port of ``host[:port]``, both checked."""
    if hostport.startswith("["):
        inside, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise InvalidConfig("unclosed '[' in the host", field)
        if "%" in inside:
            raise InvalidConfig(f"IPv6 zone ids are not supported, got [{inside}]", field)
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            raise InvalidConfig(f"[{inside}] is not an IPv6 address", field) from None
        if after and not after.startswith(":"):
            raise InvalidConfig(f"expected ':PORT' after [{inside}], got {after!r}", field)
        host = inside.lower()
        port_text = after[1:] if after else None
    else:
        name, colon, after = hostport.partition(":")
        host = name.lower()
        port_text = after if colon else None
        _check_name(host, field)
    if port_text is None:
        if scheme in _NEEDS_PORT:
            raise InvalidConfig(f"{scheme} URL needs a port, e.g. {scheme}://{hostport}:5000", field)
        return host, None
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 and 1 <= int(port_text) <= 65535):
        raise InvalidConfig(f"port must be a number from 1 to 65535, got {port_text!r}", field)
    return host, int(port_text)


def _check_name(host: str, field: str) -> None:
    """A DNS name or a canonical dotted-quad IPv4 address."""
    if not host:
        raise InvalidConfig("URL needs a host", field)
    if host.endswith("."):
        raise InvalidConfig(f"host {host!r} ends with a dot; write it without", field)
    if len(host) > 253:
        raise InvalidConfig(f"host name too long: at most 253 characters, got {len(host)}", field)
    labels = host.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise InvalidConfig(
                f"host {host!r} is not a DNS name (dot-separated labels of letters, digits, '-' and '_'), an "
                "IPv4 address or a bracketed IPv6 address",
                field,
            )
    if labels[-1][0].isdigit():
        try:
            canonical = str(ipaddress.IPv4Address(host))
        except ValueError:
            canonical = None
        if canonical != host:
            raise InvalidConfig(
                f"host {host!r} looks numeric but is not a dotted-quad IPv4 address like 10.0.0.1", field
            )


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _query(scheme: str, path: str, raw_query: str | None, field: str) -> tuple[tuple[str, str], ...]:
    """The query's pairs; for tcp, udp, srt and rtsp checked against ``QUERY_OPTIONS`` (and for the
    first three, no path)."""
    if scheme in ("rtmp", "rtmps", "whip+http", "whip+https"):  # the stream name's, the endpoint's: not FFmpeg's
        items = raw_query.split("&") if raw_query else []
        return tuple((key, value) for key, _, value in (item.partition("=") for item in items))
    if scheme in ("rtsp", "rtsps"):
        path = ""  # RTSP publishes to a path on the server
    if path not in ("", "/"):
        raise InvalidConfig(f"{scheme} URLs take no path, got {path!r}", field)
    if raw_query is None:
        return ()
    allowed = QUERY_OPTIONS[scheme]
    pairs: list[tuple[str, str]] = []
    for item in raw_query.split("&"):
        key, equals, value = item.partition("=")
        if not _QUERY_KEY.fullmatch(key) or key not in allowed:
            raise InvalidConfig(
                f"{scheme} URL option {key!r} is not allowed here; allowed: {', '.join(sorted(allowed))}",
                field,
            )
        if not equals or not allowed[key](value):
            raise InvalidConfig(f"{scheme} URL option {key!r} has an invalid value", field)
        pairs.append((key, value))
    return tuple(pairs)


@dataclass(frozen=True)
class HostPattern:
    """One entry of ``FRAMECAST_ALLOWED_HOSTS``, matched against the host FFmpeg will connect to.

    - ``ingest.example.com``, ``*.example.com``, ``ingest-?.example.com``: a DNS name pattern, label
      by label. ``*``, ``?`` and ``[...]`` match within one label and never cross a dot, so
      ``*.example.com`` matches ``a.example.com`` but neither ``a.b.example.com`` nor
      ``example.com``. Name patterns never match IP addresses (not even ``*.*.*.*``). Names are matched as names, before
      anything resolves them: listing a name trusts its DNS.
    - ``10.0.0.1``, ``10.0.0.*``, ``10.0.[0-3].*``: an IPv4 pattern (four labels of digits and
      wildcards, at least one digit), octet by octet; it matches IPv4 addresses only, so ``10.0.0.*`` does not match
      ``10.0.0.1.attacker.invalid``.
    - ``10.0.0.0/24``, ``fd00::/8``: a network in CIDR notation.
    - ``::1``, ``[2001:db8::1]``: one IPv6 address.
    """

    text: str
    kind: Literal["name", "ipv4", "network"]
    labels: tuple[str, ...] = ()
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        """Raises ValueError saying what is wrong with ``text``."""
        pattern = text.strip().lower()
        if not pattern:
            raise ValueError("empty host pattern")
        if "/" in pattern or ":" in pattern:
            try:
                network = ipaddress.ip_network(pattern.strip("[]"), strict=False)
            except ValueError as exc:
                raise ValueError(f"host pattern {text!r} is not an IP address or CIDR network: {exc}") from None
            return cls(text, "network", network=network)
        labels = tuple(pattern.split("."))
        label_chars = re.compile(r"[a-z0-9_\-*?\[\]!]+")
        if any(not label_chars.fullmatch(label) for label in labels):
            raise ValueError(
                f"host pattern {text!r}: expected dot-separated labels of letters, digits, '-', '_' and the "
                "wildcards '*', '?', '[...]' (no empty labels, no trailing dot)"
            )
        octet_like = re.compile(r"[0-9*?\[\]!-]+")
        if all(octet_like.fullmatch(label) for label in labels) and any(c.isdigit() for c in pattern):
            if len(labels) != 4:
                raise ValueError(
                    f"host pattern {text!r} looks like an IPv4 address but does not have 4 octets "
                    "(use a CIDR network like 10.0.0.0/8 for a range)"
                )
            for label in labels:
                if label.isdigit() and not (str(int(label)) == label and int(label) <= 255):
                    raise ValueError(f"host pattern {text!r}: {label!r} is not an octet from 0 to 255")
            return cls(text, "ipv4", labels=labels)
        if labels[-1][0].isdigit():
            raise ValueError(
                f"host pattern {text!r} ends in a label starting with a digit, which no host name "
                "taken here does; IPv4 patterns are 4 octets of digits and wildcards"
            )
        return cls(text, "name", labels=labels)

    def matches(self, target: NetworkUrl) -> bool:
        if self.kind == "network":
            assert self.network is not None
            return target.address is not None and target.address in self.network
        is_ipv4 = isinstance(target.address, ipaddress.IPv4Address)
        if (self.kind == "ipv4") != is_ipv4 or (self.kind == "name" and target.address is not None):
            return False
        labels = target.host.split(".")
        return len(labels) == len(self.labels) and all(
            fnmatch.fnmatchcase(label, pattern) for label, pattern in zip(labels, self.labels)
        )


@functools.lru_cache(maxsize=8)
def patterns(texts: tuple[str, ...]) -> tuple[HostPattern, ...]:
    """``FRAMECAST_ALLOWED_HOSTS`` compiled (once per list); ValueError names a pattern that is wrong."""
    return tuple(HostPattern.parse(text) for text in texts)


def host_allowed(allowed: tuple[HostPattern, ...], target: NetworkUrl) -> bool:
    """Whether FFmpeg's host of ``target`` matches one of the ``allowed`` patterns."""
    return any(pattern.matches(target) for pattern in allowed)
