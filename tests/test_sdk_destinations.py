"""One session, several destinations, on the SDK's side and without a server.

``StreamWriter([...])`` and ``framecast.Output``: the body of POST /v1/sessions the writers build
(``WriterCore.session_config``, and what StreamWriter and AsyncStreamWriter actually send to an
``httpx.MockTransport``), the configurations refused locally with ``InvalidConfig``, events about
one output fed to the core as encoded control messages, the ``outputs`` the server reports, and
the CLI's parsing and formatting of several destinations.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import framecast
from framecast import cli, protocol
from framecast.errors import InvalidConfig, SessionFailed, StateError
from framecast.rest import AsyncRestClient, RestClient
from framecast.streams import Discard, Output, ServerFile, VideoStream, destination_list
from framecast.writer_base import WriterCore, WriterState

VIDEO = VideoStream(30, 4, 4)


def body(dst: Any, format: str | None = None, option: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The body of POST /v1/sessions a writer with ``dst`` (and one 4x4 video stream) would send."""
    core = WriterCore(dst, format, **kwargs)
    core.add_stream(VIDEO)
    return core.session_config(option)


def todays_body(destination: dict[str, Any], format: str | None = None, **extra: Any) -> dict[str, Any]:
    """The single-destination body, as the SDK built it before several destinations."""
    return {
        "destination": destination,
        "format": format,
        "metadata": {},
        "options": {},
        # Payloads over the websocket (no shared memory asked for): the video may come as yuv420p.
        "streams": [{**VIDEO.to_json(), "wire_format": "auto"}],
        "realtime": None,
        "connect_timeout": None,
        **extra,
    }


def frames(count: int) -> np.ndarray:
    return (np.arange(count * 48) % 251).astype(np.uint8).reshape(count, 3, 4, 4)


# -- the request body ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dst",
    ["rtmp://a/live/k", ["rtmp://a/live/k"], Output("rtmp://a/live/k"), [Output("rtmp://a/live/k")]],
    ids=["alone", "list-of-one", "output", "list-of-one-output"],
)
def test_a_single_destination_makes_todays_body_however_it_is_given(dst: Any) -> None:
    assert body(dst) == todays_body({"type": "url", "url": "rtmp://a/live/k"})


def test_a_single_output_puts_its_format_options_and_live_settings_at_the_top_and_drops_required() -> None:
    output = Output(
        "rtmp://a/live/k",
        format="flv",
        options={"flvflags": "no_duration_filesize", "rw_timeout": 5},
        required=True,
        on_destination_drop="block",
        outage_buffer=2,
        reconnect_timeout=10,
    )
    expected = todays_body(
        {"type": "url", "url": "rtmp://a/live/k"},
        "flv",
        on_destination_drop="block",
        outage_buffer=2.0,
        reconnect_timeout=10.0,
    )
    expected["options"] = {"flvflags": "no_duration_filesize", "rw_timeout": 5}
    assert body([output], on_destination_drop="drop") == expected
    assert "required" not in json.dumps(body(output))


def test_open_options_are_merged_over_a_single_outputs_own() -> None:
    output = Output(ServerFile("rec/a.mp4"), options={"movflags": "+faststart", "brand": "isom"})
    assert body(output, option={"movflags": "frag_keyframe"})["options"] == {
        "movflags": "frag_keyframe",
        "brand": "isom",
    }


def test_the_writers_format_and_a_single_outputs_format_are_one() -> None:
    assert body(Output("out.mkv"), "matroska")["format"] == "matroska"
    assert body(Output("out.mkv", format="matroska"))["format"] == "matroska"
    assert body(Output("out.mkv", format="matroska"), "matroska")["format"] == "matroska"
    with pytest.raises(InvalidConfig, match=r"^format is given twice: 'mp4' to the writer and 'matroska'") as info:
        body(Output("out.mkv", format="matroska"), "mp4")
    assert info.value.field == "format"


def test_several_destinations_make_a_destinations_list_with_each_outputs_settings() -> None:
    dst = [
        "rtmp://a/live/k",
        Output(
            "rtmp://b/app/k2",
            format="flv",
            options={"flvflags": "no_duration_filesize"},
            required=True,
            on_destination_drop="block",
            outage_buffer=2,
            reconnect_timeout=10.5,
        ),
        ServerFile("rec/a.mp4"),
    ]
    assert body(dst, on_destination_drop="drop", connect_timeout=3.0) == {
        "destinations": [
            {"type": "url", "url": "rtmp://a/live/k"},
            {
                "type": "url",
                "url": "rtmp://b/app/k2",
                "format": "flv",
                "options": {"flvflags": "no_duration_filesize"},
                "required": True,
                "on_destination_drop": "block",
                "outage_buffer": 2.0,
                "reconnect_timeout": 10.5,
            },
            {"type": "server_file", "path": "rec/a.mp4", "crash_safe": True},
        ],
        "metadata": {},
        "streams": [{**VIDEO.to_json(), "wire_format": "auto"}],
        "realtime": True,
        "connect_timeout": 3.0,
        "on_destination_drop": "drop",
    }


def test_a_tuple_is_a_list_of_destinations_too() -> None:
    assert body(("rtmp://a/live/k", Discard()))["destinations"] == [
        {"type": "url", "url": "rtmp://a/live/k"},
        {"type": "discard", "encode": False},
    ]


@pytest.mark.parametrize(
    ("dst", "realtime", "expected"),
    [
        ([ServerFile("a.mp4"), Discard()], None, False),
        ([ServerFile("a.mp4"), "udp://127.0.0.1:5000"], None, True),
        (["rtmp://a/live/k", "rtmp://b/live/k"], False, False),
        ([ServerFile("a.mp4"), Discard()], True, True),
        ("rtmp://a/live/k", None, None),  # one destination: the server decides, as before
    ],
)
def test_realtime_defaults_to_on_when_any_destination_is_a_network_url(
    dst: Any, realtime: bool | None, expected: bool | None
) -> None:
    assert body(dst, realtime=realtime)["realtime"] is expected


def test_one_local_destination_among_several_gets_the_output_bytes(tmp_path: Path) -> None:
    sink = io.BytesIO()
    core = WriterCore(["rtmp://a/live/k", Output(sink, format="mpegts")], None)
    core.add_stream(VIDEO)
    assert core.session_config(None)["destinations"][1] == {
        "type": "client",
        "filename": None,
        "seekable": True,
        "format": "mpegts",
    }
    core.opened({"id": "r0.multi"})
    core.handle(protocol.encode_output_header(0, 0) + b"abc")
    core.handle(protocol.encode_output_header(1, 3) + b"def")
    assert sink.getvalue() == b"abcdef"


def test_download_needs_the_server_file_first(tmp_path: Path) -> None:
    core = WriterCore(["rtmp://a/live/k", ServerFile("rec/a.mp4")], None)
    core.add_stream(VIDEO)
    core.opened({"id": "r0.multi"})
    core.state = WriterState.CLOSED
    with pytest.raises(StateError, match=r"first one's: put the ServerFile first"):
        core.download_path()
    first = WriterCore([ServerFile("rec/a.mp4"), "rtmp://a/live/k"], None)
    first.opened({"id": "r0.first"})
    first.state = WriterState.CLOSED
    assert first.download_path() == "/v1/sessions/r0.first/output"


def test_the_repr_lists_every_destination() -> None:
    writer = framecast.StreamWriter(["rtmp://a/live/k", ServerFile("rec/a.mp4")])
    assert repr(writer) == (
        "<StreamWriter ['rtmp://a/live/k', 'rec/a.mp4'] destinations=2 streams=0 state=configuring>"
    )
    assert repr(framecast.StreamWriter("rtmp://a/live/k")) == (
        "<StreamWriter 'rtmp://a/live/k' format=auto streams=0 state=configuring>"
    )


# -- what the writers send -------------------------------------------------------------------------


def refusing(seen: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """A server that records each POSTed body and refuses it (422), so no websocket is opened."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(
            422, json={"error": {"code": "invalid_config", "message": "not today", "field": "destinations"}}
        )

    return handler


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_both_writers_post_the_destinations_list(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    transport = httpx.MockTransport(refusing(seen))
    dst = ["rtmp://a/live/k", Output(ServerFile("rec/a.mp4"), required=True)]
    if kind == "sync":

        def rest(server: str | None, api_key: str | None) -> RestClient:
            return RestClient(server, api_key, transport=transport)

        monkeypatch.setattr("framecast.writer.RestClient", rest)
        writer = framecast.StreamWriter(dst, server="http://framecast.test", shared_memory=False)
        writer.add_video_stream(30, 4, 4)
        with pytest.raises(InvalidConfig, match="not today"):
            writer.open()
    else:

        def arest(server: str | None, api_key: str | None) -> AsyncRestClient:
            return AsyncRestClient(server, api_key, transport=transport)

        monkeypatch.setattr("framecast.aio.AsyncRestClient", arest)
        awriter = framecast.AsyncStreamWriter(dst, server="http://framecast.test", shared_memory=False)
        awriter.add_video_stream(30, 4, 4)

        async def main() -> None:
            await awriter.open()

        with pytest.raises(InvalidConfig, match="not today"):
            asyncio.run(main())
    [sent] = seen
    assert "destination" not in sent and "format" not in sent and "options" not in sent
    assert sent["destinations"] == [
        {"type": "url", "url": "rtmp://a/live/k"},
        {"type": "server_file", "path": "rec/a.mp4", "crash_safe": True, "required": True},
    ]
    assert sent["realtime"] is True


# -- refused locally -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dst", "message", "field"),
    [
        ([], r"^dst is an empty list; give at least one destination$", "dst"),
        (
            ["rtmp://a/live/k", "out.mp4", "b.mkv"],
            r"^dst\[2\]: only one local path or file-like object per session \(its bytes come back over this "
            r"connection\); dst\[1\] is one already",
            "dst[2]",
        ),
        (["a.mp4", Output(io.BytesIO(), format="mp4")], r"^dst\[1\]: only one local path or file-like", "dst[1]"),
        (["rtmp://a/live/k", 42], r"^dst\[1\]: dst must be a path, a URL, .* got int$", "dst[1]"),
        (["rtmp://a/live/k", ["rtmp://b/live/k"]], r"^dst\[1\]: a list inside the list of destinations", "dst[1]"),
        (42, r"^dst must be a path, a URL, a framecast.ServerFile or an object with write\(\); got int$", "dst"),
    ],
    ids=["empty", "two-paths", "path-and-file", "not-a-destination", "nested-list", "single-unchanged"],
)
def test_destination_lists_that_cannot_work(dst: Any, message: str, field: str) -> None:
    with pytest.raises(InvalidConfig, match=message) as info:
        framecast.StreamWriter(dst)
    assert info.value.field == field
    with pytest.raises(InvalidConfig, match=message):
        framecast.AsyncStreamWriter(dst)


def test_a_local_path_and_a_server_file_may_go_together() -> None:
    outputs = destination_list(["out.mp4", ServerFile("out.mp4"), "rtmp://a/live/k", Discard()])
    assert [o.destination["type"] for o in outputs] == ["client", "server_file", "url", "discard"]


def test_format_with_several_destinations_says_to_use_output() -> None:
    with pytest.raises(InvalidConfig, match=r"^format='flv' applies to a single destination; with 2 destinations "):
        framecast.StreamWriter(["rtmp://a/live/k", "rtmp://b/live/k"], "flv")
    with pytest.raises(InvalidConfig, match=r"framecast.Output\(dst, format=...\)") as info:
        framecast.AsyncStreamWriter(["rtmp://a/live/k", "rtmp://b/live/k"], "flv")
    assert info.value.field == "format"
    framecast.StreamWriter(["rtmp://a/live/k"], "flv")  # a list of one is one destination


def test_open_options_with_several_destinations_say_to_use_output() -> None:
    with pytest.raises(InvalidConfig, match=r"^open\(option=...\) sets the muxer options of a single destination"):
        body(["rtmp://a/live/k", "rtmp://b/live/k"], option={"flvflags": "no_duration_filesize"})
    assert "destinations" in body(["rtmp://a/live/k", "rtmp://b/live/k"], option={})


@pytest.mark.parametrize(
    ("kwargs", "message", "field"),
    [
        ({"dst": 42}, r"^dst must be a path, a URL", "dst"),
        ({"dst": ["rtmp://a/live/k"]}, r"^framecast.Output takes one destination as dst, got a list$", "dst"),
        ({"dst": Output("a.mp4")}, r"^framecast.Output takes one destination as dst, got a Output$", "dst"),
        ({"format": ""}, r"^Output format must be a muxer name, got ''$", "format"),
        ({"format": 3}, r"^Output format must be a muxer name, got 3$", "format"),
        ({"options": "movflags=+faststart"}, r"^Output options must be a dict of muxer options, got str$", "options"),
        ({"required": "yes"}, r"^Output required must be True or False, got 'yes'$", "required"),
        ({"on_destination_drop": "later"}, r"must be 'drop' or 'block', got 'later'$", "on_destination_drop"),
        ({"outage_buffer": -1}, r"^Output outage_buffer must be a number of seconds >= 0, got -1$", "outage_buffer"),
        ({"outage_buffer": math.nan}, r"outage_buffer must be a number of seconds >= 0, got nan$", "outage_buffer"),
        ({"outage_buffer": "5"}, r"outage_buffer must be a number of seconds >= 0, got '5'$", "outage_buffer"),
        ({"outage_buffer": True}, r"outage_buffer must be a number of seconds >= 0, got True$", "outage_buffer"),
        ({"reconnect_timeout": 0}, r"reconnect_timeout must be a number of seconds > 0, got 0$", "reconnect_timeout"),
        ({"reconnect_timeout": -3.5}, r"reconnect_timeout must be a number of seconds > 0", "reconnect_timeout"),
        ({"reconnect_timeout": math.inf}, r"reconnect_timeout must be a number of seconds > 0", "reconnect_timeout"),
    ],
)
def test_an_output_that_cannot_work_is_refused_naming_the_field(
    kwargs: dict[str, Any], message: str, field: str
) -> None:
    with pytest.raises(InvalidConfig, match=message) as info:
        Output(**{"dst": "rtmp://a/live/k", **kwargs})
    assert info.value.field == field


def test_an_output_refused_inside_a_list_is_named_by_its_index() -> None:
    with pytest.raises(InvalidConfig, match=r"^dst\[1\]: dst must be a path") as info:
        destination_list(["rtmp://a/live/k", object()])
    assert info.value.field == "dst[1]"


def test_an_output_takes_the_edges_of_its_ranges() -> None:
    output = Output("rtmp://a/live/k", outage_buffer=0, reconnect_timeout=0.5, options={})
    assert output.settings == {"options": {}, "outage_buffer": 0.0, "reconnect_timeout": 0.5}
    assert Output("rtmp://a/live/k").settings == {}
    assert Output("rtmp://a/live/k").to_json() == {"type": "url", "url": "rtmp://a/live/k"}


def test_output_is_public() -> None:
    assert framecast.Output is Output and "Output" in framecast.__all__


# -- events and outputs from the server ------------------------------------------------------------


def opened(dst: Any = None, created: dict[str, Any] | None = None) -> WriterCore:
    core = WriterCore(dst or ["rtmp://a/live/k", "rtmp://b/app/k2"], None)
    core.add_stream(VIDEO)
    core.opened({"id": "r0.multi", **(created or {})})
    return core


def test_an_event_about_one_output_reaches_on_event_and_events_with_its_index() -> None:
    core = opened()
    seen: list[dict[str, Any]] = []
    core.on_event = seen.append
    core.handle(protocol.encode_control(protocol.EVENT, event="reconnecting", output=1, attempt=2, reason="refused"))
    expected = {"event": "reconnecting", "output": 1, "attempt": 2, "reason": "refused"}
    assert seen == [expected] and core.events == [expected]


def test_an_output_that_fails_for_good_is_an_event_and_the_session_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    core = opened()
    seen: list[dict[str, Any]] = []
    core.on_event = seen.append
    with caplog.at_level(logging.WARNING, logger="framecast"):
        core.handle(protocol.encode_control(protocol.EVENT, event="output_failed", output=1, reason="gone"))
    assert seen == [{"event": "output_failed", "output": 1, "reason": "gone"}]
    assert "destination 1 failed: gone" in caplog.text
    assert core.state is WriterState.OPEN
    core.raise_pending()  # nothing to raise
    assert len(core.chunk_messages(0, frames(2), None, "video")) == 1  # writes go on
    core.handle(protocol.encode_control(protocol.FAILED, reason="required output 0 failed: gone"))
    with pytest.raises(SessionFailed, match="required output 0 failed"):
        core.chunk_messages(0, frames(2), None, "video")


def output_info(index: int, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "index": index,
        "destination": {"type": "url", "url": f"rtmp://host{index}/live/****"},
        "format": "flv",
        "required": False,
        "state": state,
        "error": None,
        "counters": {"packets": 10 * index, "bytes": 1000 * index, "dropped": 0, "reconnects": 0},
        "events": [],
        **extra,
    }


def test_outputs_are_the_latest_the_server_reported() -> None:
    core = WriterCore(["rtmp://a/live/k", "rtmp://b/app/k2"], None)
    assert core.outputs == []  # before open()
    core.add_stream(VIDEO)
    core.opened({"id": "r0.multi", "outputs": [output_info(0, "connecting"), output_info(1, "connecting")]})
    assert [o["state"] for o in core.outputs] == ["connecting", "connecting"]
    final = [output_info(0, "closed"), output_info(1, "failed", error="gone")]
    core.handle(protocol.encode_control(protocol.CLOSED, session={"id": "r0.multi", "outputs": final}))
    assert core.outputs == final
    core.outputs[0]["state"] = "changed by the caller"
    assert core.outputs[0]["state"] == "closed"  # a copy


@pytest.mark.parametrize("created", [{}, {"outputs": None}, {"outputs": "nope"}])
def test_a_server_without_outputs_reports_none(created: dict[str, Any]) -> None:
    core = opened("rtmp://a/live/k", created)
    core.handle(protocol.encode_control(protocol.CLOSED, session={"id": "r0.multi"}))
    assert core.outputs == []


def test_the_writers_outputs_property_follows_the_core() -> None:
    writer = framecast.StreamWriter(["rtmp://a/live/k", "rtmp://b/app/k2"])
    assert writer.outputs == []
    writer._core.opened({"id": "r0.multi", "outputs": [output_info(0, "streaming")]})
    assert writer.outputs == [output_info(0, "streaming")]
    awriter = framecast.AsyncStreamWriter(["rtmp://a/live/k", "rtmp://b/app/k2"])
    assert awriter.outputs == []


# -- the CLI -------------------------------------------------------------------------------------


def test_push_takes_several_destinations_and_keeps_its_options() -> None:
    args = cli.build_parser().parse_args(
        ["push", "in.mp4", "rtmp://a/live/k", "server:rec/a.mp4", "--no-realtime", "--duration", "2", "--quiet"]
    )
    assert args.dst == ["rtmp://a/live/k", "server:rec/a.mp4"]
    assert (args.realtime, args.duration, args.quiet, args.format) == (False, 2.0, True, None)
    one = cli.build_parser().parse_args(["push", "--format", "flv", "in.mp4", "rtmp://a/live/k"])
    assert one.dst == ["rtmp://a/live/k"] and one.format == "flv"


def test_push_needs_a_destination(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["push", "in.mp4"])
    assert info.value.code == cli.EXIT_USAGE
    assert "dst" in capsys.readouterr().err


def test_push_destinations_become_the_writers_dst() -> None:
    assert cli.parse_destinations(["out.mp4"], "mp4") == "out.mp4"
    assert cli.parse_destinations(["rtmp://a/live/k", "server:rec/a.mp4", "b.ts"], None) == [
        "rtmp://a/live/k",
        ServerFile("rec/a.mp4"),
        "b.ts",
    ]
    assert cli.parse_destinations(["server:rec/a.mp4", "out.ts"], None, overwrite=True) == [
        ServerFile("rec/a.mp4", overwrite=True),
        "out.ts",
    ]
    assert cli.build_parser().parse_args(["push", "in.mp4", "server:a.mp4", "-y"]).overwrite is True


@pytest.mark.parametrize(
    ("dsts", "format", "message"),
    [
        (["rtmp://a/live/k", "rtmp://b/live/k"], "flv", "--format applies to a single DST; 2 were given"),
        (["a.mp4", "rtmp://a/live/k", "b.mp4"], None, "only one DST may be a local path (its bytes come back"),
        (["rtmp://a/live/k", "server:"], None, "server: needs a path under the server's output dir"),
    ],
)
def test_push_destinations_that_cannot_work_are_usage_errors(
    dsts: list[str], format: str | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(cli.CliError, match=message.replace("(", r"\(")) as info:
        cli.parse_destinations(dsts, format)
    assert info.value.status == cli.EXIT_USAGE
    source = tmp_path / "in.mp4"
    source.write_bytes(b"not decoded: refused before")
    argv = ["push", str(source), *dsts, *(["--format", format] if format else []), "--server", "http://127.0.0.1:9"]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert capsys.readouterr().err == f"framecast push: {info.value}\n"


def session_info(**extra: Any) -> dict[str, Any]:
    return {
        "id": "r0.multi",
        "state": "streaming",
        "format": "flv",
        "destination": {"type": "url", "url": "rtmp://host0/live/****"},
        "created_at": 1000.0,
        "streams": [],
        **extra,
    }


def test_sessions_show_prints_one_line_per_output() -> None:
    outputs = [
        output_info(0, "streaming", required=True),
        output_info(
            1,
            "failed",
            destination={"type": "server_file", "path": "rec/a.mp4"},
            format="mp4",
            error="No space left on device",
            counters={"packets": 7, "bytes": 2048, "dropped": 3, "reconnects": 2},
        ),
    ]
    text = cli.format_session(session_info(outputs=outputs), now=1010.0)
    lines = text.splitlines()
    assert "destination  rtmp://host0/live/**** +1 more" in lines
    at = lines.index("outputs")
    assert lines[at + 1 : at + 3] == [
        "  0: streaming  rtmp://host0/live/****  flv  required  0 packets / 0 B, 0 dropped, 0 reconnects",
        "  1: failed  server:rec/a.mp4  mp4  7 packets / 2.0 KiB, 3 dropped, 2 reconnects"
        "  error: No space left on device",
    ]


def test_sessions_show_from_a_server_without_outputs_is_unchanged() -> None:
    text = cli.format_session(session_info(), now=1010.0)
    assert "outputs" not in text
    assert "destination  rtmp://host0/live/****" in text.splitlines()


def test_sessions_list_shows_the_first_destination_and_how_many_more() -> None:
    several = session_info(outputs=[output_info(0, "streaming"), output_info(1, "streaming"), output_info(2, "closed")])
    one = session_info(id="r0.one", created_at=1001.0, outputs=[output_info(0, "streaming")])
    old = session_info(id="r0.old", created_at=1002.0, destination={"type": "discard"})
    rows = cli.format_sessions_table([several, one, old], now=1010.0).splitlines()
    assert rows[0].split()[:3] == ["ID", "STATE", "DESTINATION"]
    assert rows[1].split()[:6] == ["r0.multi", "streaming", "rtmp://host0/live/****", "+2", "more", "10s"]
    assert rows[2].split()[:4] == ["r0.one", "streaming", "rtmp://host0/live/****", "9s"]
    assert rows[3].split()[:4] == ["r0.old", "streaming", "discard", "8s"]


def test_the_push_summary_lists_each_of_several_outputs() -> None:
    class Finished:
        session_id = "r0.multi"
        summary = session_info(outputs=[output_info(0, "closed"), output_info(1, "failed", error="gone")])

    text = cli._summary(Finished(), "rtmp://a/live/k, rtmp://b/live/k", "http://s", {}, 2.0)
    assert text.splitlines() == [
        "pushed to rtmp://a/live/k, rtmp://b/live/k in 2.0 s (session r0.multi)",
        "  output 0: closed  rtmp://host0/live/****  flv  0 packets / 0 B, 0 dropped, 0 reconnects",
        "  output 1: failed  rtmp://host1/live/****  flv  10 packets / 1000 B, 0 dropped, 0 reconnects  error: gone",
    ]


def test_push_prints_events_about_one_output_once(capsys: pytest.CaptureFixture[str]) -> None:
    cli._print_event({"event": "reconnecting", "output": 1, "attempt": 2})
    cli._print_event({"event": "output_failed", "output": 1, "reason": "gone"})  # the SDK logs it
    assert capsys.readouterr().err == "event: reconnecting output=1 attempt=2\n"


def test_a_whip_bearer_token_goes_in_the_destination_object() -> None:
    url = "whip+https://media.example.com/live/whip"
    single = body(Output(url, bearer_token="tok"))
    assert single["destination"] == {"type": "url", "url": url, "bearer_token": "tok"}
    several = body([Output(url, bearer_token="tok"), ServerFile("rec/a.mp4")])
    assert several["destinations"][0] == {"type": "url", "url": url, "bearer_token": "tok"}
    with pytest.raises(InvalidConfig, match="bearer_token is for a WHIP endpoint") as err:
        Output(ServerFile("a.mp4"), bearer_token="tok")
    assert err.value.field == "bearer_token"
    with pytest.raises(InvalidConfig, match="non-empty string"):
        Output(url, bearer_token="")
