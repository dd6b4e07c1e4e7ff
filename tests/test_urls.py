"""Destination URLs read as FFmpeg reads them, allowed-hosts patterns, masking, and the Host check.

Pure tests of ``urls``, ``masking`` and ``hosts`` first, with Hypothesis where a property should
hold for any input; then real servers (``framecast serve`` in a subprocess): hostile URLs are
refused before any session exists and the encoder never connects (a real listener on the host
FFmpeg would have reached hears nothing), secrets never reach a listing, an event, a websocket
message or the log, FFmpeg's own error lines included, and a keyless server answers only to
loopback host names and the ones it is told.
"""

from __future__ import annotations

import io
import json
import socket
import time
from contextlib import closing

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from framecast_server import masking
from framecast_server.api import hosts
from framecast_server.config import Settings
from framecast_server.errors import InvalidConfig
from framecast_server.planning import ffmpeg, urls

from .conftest import free_port

VIDEO = {"type": "video", "width": 64, "height": 48, "frame_rate": 10}


def body(url: str) -> dict:
    return {"streams": [VIDEO], "destination": {"type": "url", "url": url}}


def refused(url: str) -> str:
    with pytest.raises(InvalidConfig) as err:
        urls.parse(url)
    assert err.value.field == "destination.url"
    return err.value.message


# -- urls.parse: what is taken, and as what ----------------------------------------------------


@pytest.mark.parametrize(
    "url, host, port",
    [
        ("rtmp://ingest.example.com/live/key", "ingest.example.com", None),
        ("RTMP://Ingest.Example.COM:1935/live/key?token=t&x=y", "ingest.example.com", 1935),
        ("rtmps://u:p@live.example.net:443/app/key", "live.example.net", 443),
        ("udp://239.0.0.1:5000?pkt_size=1316&ttl=4", "239.0.0.1", 5000),
        ("tcp://[::1]:9000?timeout=2000000&tcp_nodelay=1", "::1", 9000),
        ("srt://a-b_c.example:9000?passphrase=0123456789ab&latency=120&streamid=publish:x", "a-b_c.example", 9000),
        ("rtmp://allowed.example@127.0.0.1/live/k", "127.0.0.1", None),  # user info, not the host
        ("rtmp://a@b@c.example/x", "c.example", None),  # the last '@' ends the user info, in both parsers
    ],
)
def test_urls_are_read_as_ffmpeg_reads_them(url, host, port):
    target = urls.parse(url)
    assert (target.host, target.port) == (host, port)
    theirs = ffmpeg.url_split(target.url)
    assert (theirs.hostname.lower(), theirs.port) == (host, -1 if port is None else port)
    assert target.url.startswith(target.scheme + "://")


@pytest.mark.parametrize("scheme", ["tcp", "rtmp", "udp", "rtmps", "srt"])
@pytest.mark.parametrize("sep", ["\x00", "\t", "\n", "\r", " ", "\\", "\x7f", "\x1b", "#"])
def test_characters_ffmpeg_or_python_read_differently_are_refused(scheme, sep):
    # FFmpeg stops at a NUL and connects to the prefix; urlsplit drops tabs and newlines; and so on.
    prefix = f"{scheme}://127.0.0.1:9"
    message = refused(f"{prefix}{sep}@allowed.example.com/live/k")
    assert "URL contains" in message and f"at position {len(prefix)}" in message


@pytest.mark.parametrize(
    "url, message",
    [
        ("rtmp://h:99999/x", "port must be a number from 1 to 65535, got '99999'"),
        ("rtmp://h:abc/x", "got 'abc'"),
        ("rtmp://h:0/x", "got '0'"),
        ("rtmp://h:+12/x", "got '+12'"),
        ("rtmp://h:12abc/x", "got '12abc'"),
        ("rtmp://h:/x", "got ''"),
        ("rtmp://h:12:13/x", "got '12:13'"),
        ("rtmp://[h/x", "unclosed '['"),
        ("rtmp://[127.0.0.1]/x", "not an IPv6 address"),
        ("rtmp://[::1%25lo]/x", "zone ids"),
        ("rtmp://[::1]x/x", "expected ':PORT'"),
        ("rtmp:///live/x", "needs a host"),
        ("rtmp:h/x", "scheme://host"),
        ("tcp://h", "needs a port"),
        ("udp://h/", "needs a port"),
        ("rtmp://127.1/x", "not a dotted-quad"),
        ("rtmp://0x7f.0.0.1/x", "not a dotted-quad"),
        ("rtmp://2130706433/x", "not a dotted-quad"),
        ("rtmp://127.000.000.001/x", "not a dotted-quad"),
        ("rtmp://h.example./x", "ends with a dot"),
        ("rtmp://h%2eexample/x", "is not a DNS name"),
        ("rtmp://127%2e0.0.1/x", "is not a DNS name"),
        ("rtmp://h..example/x", "is not a DNS name"),
        ("rtmp://-h.example/x", "is not a DNS name"),
        ("rtmp://127\u30020\u30020\u30021/x", "the character '\u3002'"),  # ideographic full stops
        ("rtmp://h\uff0eexample/x", "the character '\uff0e'"),
        ("rtmp://h\u2024example/x", "the character '\u2024'"),
        ("rtmp://h.example/x|y", "the character '|'"),
        ('rtmp://h.example/"x', "the character '\"'"),
        ("tcp://h:1?listen", "option 'listen' is not allowed"),
        ("tcp://h:1?listen=1", "option 'listen' is not allowed"),
        ("tcp://h:1?timeout=1&listen=2", "option 'listen' is not allowed"),
        ("tcp://h:1?local_port=5000", "option 'local_port' is not allowed"),
        ("tcp://h:1?%6cisten=1", "is not allowed"),
        ("tcp://h:1?timeout=1e9", "option 'timeout' has an invalid value"),
        ("tcp://h:1?timeout", "option 'timeout' has an invalid value"),
        ("udp://h:1?localaddr=127.0.0.1", "option 'localaddr' is not allowed"),
        ("udp://h:1?localport=9", "option 'localport' is not allowed"),
        ("udp://h:1?connect=1", "option 'connect' is not allowed"),
        ("udp://h:1?broadcast=1", "option 'broadcast' is not allowed"),
        ("udp://h:1?pkt_size=1316&", "option '' is not allowed"),
        ("srt://h:1?mode=listener", "option 'mode' is not allowed"),
        ("srt://h:1?transtype=bogus", "option 'transtype' has an invalid value"),
        ("tcp://h:1/path", "take no path"),
        ("udp://h:1/x?pkt_size=1316", "take no path"),
        ("rtmp://" + "a" * 2050, "URL too long"),
        ("rtmp://" + "a" * 254 + "/x", "host name too long"),
    ],
)
def test_malformed_and_ambiguous_urls_are_refused_saying_why(url, message):
    assert message in refused(url)


def test_refusals_quote_the_wrong_part_never_the_whole_url():
    message = refused("rtmp://user:hunter2pass@h.example:99999/live/streamkey")
    assert "99999" in message and "hunter2pass" not in message and "streamkey" not in message


def test_schemes_are_lower_cased_for_ffmpeg_which_matches_protocol_names_exactly():
    assert urls.parse("Tcp://h:1?timeout=5").url == "tcp://h:1?timeout=5"
    assert urls.scheme_of("RTMP://x") == "rtmp" and urls.scheme_of("pipe:1") == "pipe"
    assert urls.scheme_of("\x00rtmp://x") == "" and urls.scheme_of("") == ""


URLISH = st.builds(
    "".join,
    st.lists(
        st.sampled_from(
            [
                "rtmp://",
                "tcp://",
                "udp://",
                "srt://",
                "rtmps://",
                "[",
                "]",
                "::1",
                "@",
                ":",
                "/",
                "?",
                "&",
                "=",
                "%",
                "%00",
                "\x00",
                "\\",
                ".",
                "127.0.0.1",
                "1935",
                "99999",
                "h.example",
                "user:pw",
                "listen=1",
                "timeout=5",
                "pkt_size=1316",
                "#",
                " ",
                "\t",
                "\u3002",
                "0x7f",
                "a",
                "-",
                "_",
                "+",
            ]
        ),
        max_size=14,
    ),
)


@settings(max_examples=600, deadline=None)
@given(st.one_of(URLISH, st.text(max_size=60)))
def test_whatever_is_taken_ffmpeg_reads_the_same_way(url):
    """Any string is refused with our own error, or FFmpeg agrees with us on host and port."""
    try:
        target = urls.parse(url)
    except InvalidConfig as exc:
        assert exc.field == "destination.url" and exc.message
        return
    theirs = ffmpeg.url_split(target.url)
    assert theirs.hostname.lower() == target.host and theirs.port == (target.port or -1)
    assert target.url.isascii() and target.url.isprintable() and not any(c in target.url for c in " \\#")
    assert target.scheme in urls.SCHEMES and target.host


# -- host patterns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, host, allowed",
    [
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "A.Example.Com", True),
        ("*.example.com", "a.b.example.com", False),  # a wildcard stays within one label
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.example.com.attacker.invalid", False),
        ("*.example.com", "aexample.com", False),
        ("ingest-?.example.com", "ingest-1.example.com", True),
        ("ingest-?.example.com", "ingest-12.example.com", False),
        ("ingest-[ab].example.com", "ingest-b.example.com", True),
        ("example.com", "example.com", True),
        ("example.com", "www.example.com", False),
        ("10.0.0.*", "10.0.0.1", True),
        ("10.0.0.*", "10.0.0.255", True),
        ("10.0.0.*", "10.0.0.1.attacker.invalid", False),
        ("10.0.0.*", "10.0.1.1", False),
        ("10.0.0.*", "10.0.0.evil", False),  # IPv4 patterns match addresses only
        ("10.0.[0-3].*", "10.0.3.9", True),
        ("10.0.[0-3].*", "10.0.4.9", False),
        ("*.*.*.*", "192.168.1.1", False),  # no digit: a name pattern, and those never match addresses
        ("*.*.*.*", "a.b.c.d", True),
        ("10.*.*.*", "10.200.3.4", True),
        ("*", "localhost", True),
        ("*", "10.0.0.1", False),
        ("*", "a.example", False),
        ("10.0.0.0/24", "10.0.0.77", True),
        ("10.0.0.0/24", "10.0.1.77", False),
        ("10.0.0.0/24", "10.0.0.77.attacker.invalid", False),
        ("fd00::/8", "[fd12::1]", True),
        ("fd00::/8", "[fe80::1]", False),
        ("::1", "[::1]", True),
        ("[::1]", "[0:0::1]", True),
        ("::1", "127.0.0.1", False),
        ("127.0.0.1", "[::ffff:127.0.0.1]", False),
    ],
)
def test_host_patterns(pattern, host, allowed):
    target = urls.parse(f"rtmp://{host}/live/k")
    assert urls.host_allowed(urls.patterns((pattern,)), target) is allowed


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("10.0.0", "does not have 4 octets"),
        ("10.0.0.0.1", "does not have 4 octets"),
        ("a.10", "ends in a label starting with a digit"),
        ("10.0.0.256", "is not an octet"),
        ("10.0.0.01", "is not an octet"),
        ("10.0.0.0/33", "not an IP address or CIDR network"),
        ("a..example", "no empty labels"),
        ("example.com.", "no empty labels"),
        ("exa mple.com", "expected dot-separated labels"),
        ("", "empty host pattern"),
    ],
)
def test_wrong_host_patterns_stop_the_server_naming_them(pattern, message):
    with pytest.raises(ValueError, match=message):
        urls.HostPattern.parse(pattern)
    if pattern:
        with pytest.raises(ValueError, match="allowed_hosts"):
            Settings(allowed_hosts=pattern)


# -- masking -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("rtmp://user:pw@example.com/app/key?token=t", "rtmp://example.com/app/****"),
        ("rtmp://127.0.0.1:1935/live/secretkey", "rtmp://127.0.0.1:1935/live/****"),
        ("rtmp://h.example/KEY", "rtmp://h.example/****"),  # one segment: the stream key
        ("rtmp://h.example/live/KEY/", "rtmp://h.example/live/****"),  # trailing slash
        ("rtmp://h.example/live/a/b", "rtmp://h.example/live/****"),
        ("rtmps://h.example:443/live/KEY?x=1", "rtmps://h.example:443/live/****"),
        ("rtmp://h.example", "rtmp://h.example"),
        ("srt://h:9000?passphrase=0123456789&latency=1", "srt://h:9000"),
        ("tcp://u:p@[::1]:9?timeout=5", "tcp://[::1]:9"),
        ("rtmp://h:99999/x", "rtmp://h:99999/****"),  # malformed, but shown (never raises)
        ("rtmp://[h/live/k", "rtmp://[h/live/****"),
        ("rtmp://h\x00@x/y\n", "rtmp://x/****"),
        ("rtmp://h\u3002x/y", "rtmp://h%E3%80%82x/****"),
        ("no url at all", "****"),
        ("", ""),
    ],
)
def test_masked_shows_no_credentials_query_or_stream_key(url, shown):
    assert masking.masked(url) == shown


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), URLISH, st.binary().map(lambda b: b.decode("latin-1"))))
def test_masking_is_total_and_one_line(text):
    shown = masking.masked(text)
    assert isinstance(shown, str) and shown.isprintable() and "\n" not in shown
    assert isinstance(masking.scrub(text), str) and isinstance(masking.Redactor(text)(text + " x"), str)


SECRET = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_"), min_size=6, max_size=16)


@settings(max_examples=300, deadline=None)
@given(
    user=SECRET,
    password=SECRET,
    key=SECRET,
    token=SECRET,
    app=st.sampled_from(["live", "app"]),
    trailing=st.booleans(),
    scheme=st.sampled_from(["rtmp", "rtmps"]),
)
def test_no_secret_of_an_rtmp_url_survives_masking(user, password, key, token, app, trailing, scheme):
    url = f"{scheme}://{user}:{password}@ingest.example.com:1935/{app}/{key}{'/' if trailing else ''}?token={token}"
    shown = masking.masked(url)
    assert shown == f"{scheme}://ingest.example.com:1935/{app}/****"
    text = f"Connection to {url} failed: {password} {key} {token}; also {user}:{password}@h and ?token={token}."
    redacted = masking.Redactor(url)(text)
    for secret in (password, key, token):
        assert secret not in redacted, (secret, redacted)


def test_redactor_masks_ffmpegs_lines_and_leaves_the_rest():
    url = "tcp://admin:hunter2pass@127.0.0.1:9?timeout=2000000"
    redact = masking.Redactor(url)
    line = f"Connection to {url} failed: Connection refused"
    assert redact(line) == "Connection to tcp://127.0.0.1:9 failed: Connection refused"
    # Any URL with user info or a query is masked, known or not, and sentence punctuation stays.
    assert redact("see rtmp://x:y@other.example/live/k, then udp://h:1?ttl=3.") == (
        "see rtmp://other.example/live/****, then udp://h:1."
    )
    assert redact("password hunter2pass; admin:hunter2pass") == "password ****; ****"
    assert redact("timeout 2000000 stays") == "timeout 2000000 stays"  # not a secret option


def test_redacting_stream_masks_lines_written_in_pieces():
    target = io.StringIO()
    stream = masking.RedactingStream(target, masking.Redactor("rtmp://h.example/live/streamkey42"))
    stream.write("Connection to rtmp://h.exa")
    stream.write("mple/live/streamkey42 failed\nand ")
    stream.write("streamkey42")
    assert target.getvalue() == "Connection to rtmp://h.example/live/**** failed\n"
    stream.flush()
    assert target.getvalue().endswith("and ****")


# -- the Host header -------------------------------------------------------------------------------


async def unreachable_app(scope, receive, send):
    raise AssertionError("HostCheck.accepts() never calls the app")


@pytest.mark.parametrize(
    "header, accepted",
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8000", True),
        ("127.9.8.7:1", True),
        ("localhost", True),
        ("LOCALHOST:8000", True),
        ("localhost.:8000", True),
        ("[::1]", True),
        ("[::1]:8000", True),
        ("framecast.internal:8000", True),
        ("evil.example", False),
        ("evil.example:8000", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example", False),
        ("", False),
        ("127.0.0.1:80:80", False),
        ("[::1", False),
        ("[::1]x", False),
        ("10.0.0.1", False),
        ("[::ffff:8.8.8.8]", False),
    ],
)
def test_host_header_check(header, accepted):
    check = hosts.HostCheck(app=unreachable_app, allowed=hosts.server_names(["Framecast.Internal"], None, "127.0.0.1"))
    assert check.accepts(header) is accepted


def test_server_names_take_the_public_url_and_a_specific_bind_address():
    names = hosts.server_names(["a.example", " "], "https://Cast.Example.org/base", "10.1.2.3")
    assert names == {"a.example", "cast.example.org", "10.1.2.3"}
    assert hosts.server_names([], None, "0.0.0.0") == frozenset()


# -- against a real server --------------------------------------------------------------------------


ALLOWED = "x.example.com,*.ingest.example,10.0.0.*,127.0.0.2"


def listening(host: str, port: int = 0) -> tuple[socket.socket, socket.socket]:
    """A TCP listener and a UDP socket on the same port of ``host``."""
    tcp = socket.socket()
    tcp.bind((host, port))
    tcp.listen(16)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, tcp.getsockname()[1]))
    return tcp, udp


def heard(tcp: socket.socket, udp: socket.socket, wait: float) -> list[str]:
    """What reached ``tcp`` (connections) and ``udp`` (datagrams) within ``wait`` seconds."""
    got: list[str] = []
    tcp.settimeout(wait)
    try:
        conn, peer = tcp.accept()
        conn.close()
        got.append(f"tcp connection from {peer}")
    except TimeoutError:
        pass
    udp.settimeout(0.5)
    try:
        data, peer = udp.recvfrom(65536)
        got.append(f"udp datagram from {peer}")
    except TimeoutError:
        pass
    return got


def test_nul_bytes_and_parser_tricks_never_reach_a_host_that_is_not_allowed(own_server):
    server = own_server(FRAMECAST_ALLOWED_HOSTS=ALLOWED)
    tcp, udp = listening("127.0.0.1")
    port = tcp.getsockname()[1]
    hostile = [
        f"tcp://127.0.0.1:{port}\x00@x.example.com:{port}",
        f"rtmp://127.0.0.1:{port}\x00@x.example.com/live/k",
        f"udp://127.0.0.1:{port}\x00@x.example.com:{port}",
        f"rtmps://127.0.0.1:{port}\x00@x.example.com/live/k",
        f"srt://127.0.0.1:{port}\x00@x.example.com:{port}",
        f"tcp://127.0.0.1:{port}\x00.x.example.com:{port}",
        f"rtmp://127.0.0.1:{port}\\@x.example.com/live/k",
        f"rtmp://127.0.0.1:{port}\t@x.example.com/live/k",
        f"rtmp://127.0.0.1:{port}\n@x.example.com/live/k",
        f"rtmp://127.0.0.1:{port} @x.example.com/live/k",
        f"rtmp://x.example.com@127.0.0.1:{port}/live/k",
        f"rtmp://x.example.com:{port}@127.0.0.1:{port}/live/k",
        f"tcp://x.example.com@127.0.0.1:{port}",
        f"rtmp://127.0.0.1%00.x.example.com:{port}/live/k",
        f"rtmp://127\u30020\u30020\u30021:{port}/live/k",
        f"rtmp://127.0.0.1.:{port}/live/k",
        f"rtmp://[::ffff:127.0.0.1]:{port}/live/k",
        f"rtmp://[127.0.0.1]:{port}/live/k",
        f"rtmp://2130706433:{port}/live/k",
        f"rtmp://127.1:{port}/live/k",
        f"rtmp://10.0.0.1.attacker.invalid:{port}/live/k",
        f"rtmp://a.b.ingest.example:{port}/live/k",
        f"rtmp://127.0.0.1:{port}#@x.example.com/live/k",
        f"tcp://x.example.com:{port}?listen=1",
        f"udp://x.example.com:{port}?localaddr=127.0.0.1&localport={port}",
    ]
    with httpx.Client(base_url=server.url, timeout=30) as api, closing(tcp), closing(udp):
        for url in hostile:
            response = api.post("/v1/sessions", json=body(url))
            assert response.status_code == 422, (url, response.text)
            assert response.json()["error"]["field"] == "destination.url", (url, response.text)
        assert api.get("/v1/sessions").json() == [], "a refused URL left a session behind"
        # Bounded: an encoder started for any of them would have connected (or sent) by now.
        assert heard(tcp, udp, 3.0) == []

        # The control: an allowed host on the same kind of listener is reached, so silence above
        # means refused, not unheard.
        tcp2, udp2 = listening("127.0.0.2")
        with closing(tcp2), closing(udp2):
            created = api.post("/v1/sessions", json=body(f"tcp://127.0.0.2:{tcp2.getsockname()[1]}"))
            assert created.status_code == 201, created.text
            got = heard(tcp2, udp2, 15.0)
            assert got and got[0].startswith("tcp connection"), got
            api.delete(f"/v1/sessions/{created.json()['id']}")


@pytest.mark.parametrize(
    "url",
    [
        "rtmp://h.example:99999/x",
        "rtmp://h.example:abc/x",
        "rtmp://[h/x",
        "rtmp://h.example:/x",
        "udp://h.example:0",
        "tcp://[::1]:65536",
        "rtmp://h.example:1935:1/x",
        "srt://[::1%25eth0]:9000",
    ],
)
def test_bad_ports_are_422_and_leave_every_listing_working(api, url):
    response = api.post("/v1/sessions", json=body(url))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "destination.url" and error["code"] == "invalid_config"
    assert api.get("/v1/sessions").status_code == 200
    assert api.get("/").status_code == 200  # the dashboard


def stream_messages(created: dict, until: float) -> list[str]:
    """Every websocket message of a session (text as is, binary as latin-1) until it fails or closes."""
    got: list[str] = []
    headers = {"Authorization": f"Bearer {created['token']}"}
    with connect(created["stream_url"], additional_headers=headers, max_size=None, open_timeout=10) as ws:
        while time.monotonic() < until:
            try:
                message = ws.recv(timeout=max(0.1, until - time.monotonic()))
            except TimeoutError:
                break
            except Exception:  # closed
                break
            got.append(message if isinstance(message, str) else message.decode("latin-1"))
            if isinstance(message, str) and json.loads(message).get("type") == "failed":
                break
    return got


@pytest.mark.parametrize(
    "template, shown, ffmpeg_says",
    [
        # FFmpeg's tcp protocol quotes the whole URL in its error: "Connection to tcp://user:pass@..."
        (
            "tcp://admin:hunter2pass@127.0.0.1:{port}?timeout=2000000",
            "tcp://127.0.0.1:{port}",
            "Connection to tcp://127.0.0.1:{port} failed",
        ),
        (
            "rtmp://admin:hunter2pass@127.0.0.1:{port}/live/streamkey123?token=tokensecret9",
            "rtmp://127.0.0.1:{port}/live/****",
            "Connection refused",
        ),
        ("rtmp://127.0.0.1:{port}/streamkey123", "rtmp://127.0.0.1:{port}/****", "Connection refused"),
        ("rtmp://127.0.0.1:{port}/live/streamkey123/", "rtmp://127.0.0.1:{port}/live/****", "Connection refused"),
        (
            "rtmps://admin:hunter2pass@127.0.0.1:{port}/app/streamkey123?tokensecret9",
            "rtmps://127.0.0.1:{port}/app/****",
            "Connection refused",
        ),
    ],
)
def test_secrets_reach_no_listing_event_message_or_log(server, api, template, shown, ffmpeg_says):
    port = free_port()  # nothing listens: the encoder's connect is refused, FFmpeg says so
    url = template.format(port=port)
    created = api.post("/v1/sessions", json=body(url))
    assert created.status_code == 201, created.text
    messages = stream_messages(created.json(), time.monotonic() + 20)
    info = api.get(f"/v1/sessions/{created.json()['id']}").json()
    assert info["state"] == "failed", info
    assert info["destination"]["url"] == shown.format(port=port)
    assert ffmpeg_says.format(port=port) in info["error"], info["error"]  # FFmpeg's words, masked, not dropped
    assert any('"type": "failed"' in m or '"type":"failed"' in m for m in messages), messages
    listing = api.get("/v1/sessions").text
    time.sleep(0.5)  # the encoder's last lines reach the log
    log = server.log()
    shown_anywhere = {"info": json.dumps(info), "listing": listing, "messages": "\n".join(messages), "log": log}
    for where, text in shown_anywhere.items():
        for secret in ("hunter2pass", "streamkey123", "tokensecret9", "admin:"):
            assert secret not in text, f"{secret!r} in the {where}"


def test_ffmpegs_own_error_lines_reach_the_log_masked(server, api):
    port = free_port()
    created = api.post("/v1/sessions", json=body(f"tcp://admin:hunter2pass@127.0.0.1:{port}?timeout=2000000"))
    assert created.status_code == 201, created.text
    deadline = time.monotonic() + 20
    while api.get(f"/v1/sessions/{created.json()['id']}").json()["state"] != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    # The encoder process's stderr is the server's log; FFmpeg's line is there, its URL masked.
    assert f"Connection to tcp://127.0.0.1:{port} failed: Connection refused" in server.log()
    assert "hunter2pass" not in server.log()


def raw_handshake(port: int, host: str) -> tuple[int, bytes]:
    """Open a websocket to a session that does not exist with ``Host: host``; (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET /v1/sessions/nope/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
        )
        while len(rest) < length:
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk
        return int(head.split()[1]), rest


def test_a_keyless_server_answers_only_to_loopback_and_its_own_names(own_server):
    server = own_server(FRAMECAST_SERVER_NAMES="framecast.internal", FRAMECAST_PUBLIC_URL="https://cast.example.org")
    port = server.port
    with httpx.Client(base_url=server.url, timeout=30) as api:
        for host in (
            "evil.example",
            f"evil.example:{port}",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "framecast.internal.evil.example",
        ):
            response = api.get("/v1/sessions", headers={"Host": host})
            assert response.status_code == 421, (host, response.text)
            error = response.json()["error"]
            assert error["code"] == "misdirected_request" and repr(host) in error["message"], error
        for host in (
            f"127.0.0.1:{port}",
            "127.0.0.1",
            f"localhost:{port}",
            f"[::1]:{port}",
            "127.3.4.5",
            f"framecast.internal:{port}",
            "FRAMECAST.internal",
            "cast.example.org",
        ):
            assert api.get("/v1/sessions", headers={"Host": host}).status_code == 200, host
        assert (
            api.post("/v1/sessions", json=body("rtmp://h.example/live/k"), headers={"Host": "evil.example"}).status_code
            == 421
        )
        assert api.get("/healthz").status_code == 200
        # The probes answer any host (a proxy's check sends none, kubelet's the pod's IP); nothing else does.
        for probe in ("/healthz", "/readyz"):
            assert api.get(probe, headers={"Host": "10.0.0.7:8000"}).status_code == 200, probe
        for path in ("/healthz/", "/readyz/x", "/metrics", "/dashboard"):
            assert api.get(path, headers={"Host": "10.0.0.7:8000"}).status_code == 421, path
    # Websockets too: the handshake is answered with the same 421, before any session is looked up.
    status, refusal = raw_handshake(port, "evil.example")
    assert status == 421 and json.loads(refusal)["error"]["code"] == "misdirected_request"
    status, _ = raw_handshake(port, f"127.0.0.1:{port}")
    assert status == 101  # accepted (then closed with 4404: there is no such session)


def test_the_default_test_server_checks_hosts_too(server, api):
    assert api.get("/v1/sessions", headers={"Host": "rebound.example"}).status_code == 421
    assert api.get("/v1/sessions").status_code == 200


def test_with_api_keys_the_key_decides_not_the_host(own_server):
    server = own_server(FRAMECAST_API_KEYS="key-5c1d7e")
    headers = {"Authorization": "Bearer key-5c1d7e", "Host": "framecast.behind-a-proxy.example"}
    assert httpx.get(server.url + "/v1/sessions", headers=headers, timeout=30).status_code == 200
