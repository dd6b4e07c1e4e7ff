"""Filters, encoder options and muxer options by allowlist (allowlist.py, filtergraph.py, avoptions.py).

Three layers:
1. the parser against FFmpeg's own grammar: av_get_token and avfilter_graph_segment_parse, called
   through ctypes on the libraries PyAV bundles, are the reference for quoting, escaping,
   positional options and aliases;
2. the allowlists against FFmpeg's own option tables: nothing allowed names a file, URL or command;
3. a real server: the security issue's configs and variants nobody tried are refused with a 422
   naming the field, nothing appears outside the output directory, and lookalikes still encode.
"""

from __future__ import annotations

import ctypes
import os
import secrets
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import framecast
from framecast_server.config import Settings
from framecast_server.errors import InvalidConfig
from framecast_server.planning import allowlist, avoptions, destinations, ffmpeg
from framecast_server.planning.filtergraph import FilterSyntaxError, escape, get_token, split_graph, split_options

from .media import decode, patterns

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile("ci" if os.environ.get("CI") else "dev")
GRAMMAR = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- FFmpeg's own parser, as the reference ------------------------------------------------------


class _Params(ctypes.Structure):
    _fields_ = [
        ("filter", ctypes.c_void_p),
        ("filter_name", ctypes.c_char_p),
        ("instance_name", ctypes.c_char_p),
        ("opts", ctypes.c_void_p),
        ("inputs", ctypes.c_void_p),
        ("nb_inputs", ctypes.c_uint),
        ("outputs", ctypes.c_void_p),
        ("nb_outputs", ctypes.c_uint),
    ]


class _Chain(ctypes.Structure):
    _fields_ = [("filters", ctypes.POINTER(ctypes.POINTER(_Params))), ("nb_filters", ctypes.c_size_t)]


class _Segment(ctypes.Structure):
    _fields_ = [
        ("graph", ctypes.c_void_p),
        ("chains", ctypes.POINTER(ctypes.POINTER(_Chain))),
        ("nb_chains", ctypes.c_size_t),
        ("scale_sws_opts", ctypes.c_char_p),
    ]


class _Entry(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_char_p)]


def _ffmpeg() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    util, filt = ffmpeg._bundled("libavutil"), ffmpeg._bundled("libavfilter")
    util.av_get_token.restype = ctypes.c_void_p
    util.av_get_token.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_char_p]
    util.av_free.argtypes = [ctypes.c_void_p]
    util.av_dict_iterate.restype = ctypes.POINTER(_Entry)
    util.av_dict_iterate.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Entry)]
    util.av_opt_set_from_string.restype = ctypes.c_int
    util.av_opt_set_from_string.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
    ]
    util.av_opt_get.restype = ctypes.c_int
    util.av_opt_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
    filt.avfilter_graph_alloc.restype = ctypes.c_void_p
    filt.avfilter_graph_free.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    filt.avfilter_graph_segment_parse.restype = ctypes.c_int
    filt.avfilter_graph_segment_parse.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.POINTER(_Segment)),
    ]
    filt.avfilter_graph_segment_free.argtypes = [ctypes.POINTER(ctypes.POINTER(_Segment))]
    return util, filt


UTIL, FILT = _ffmpeg()


def ffmpeg_get_token(text: str, term: str) -> tuple[str, int]:
    """libavutil's av_get_token: the token and how many bytes it consumed."""
    data = text.encode()
    buf = ctypes.c_char_p(data)
    start = ctypes.cast(buf, ctypes.c_void_p).value
    ptr = UTIL.av_get_token(ctypes.byref(buf), term.encode())
    token = ctypes.string_at(ptr).decode()
    UTIL.av_free(ptr)
    end = ctypes.cast(buf, ctypes.c_void_p).value
    assert start is not None and end is not None
    return token, end - start


def ffmpeg_parse(desc: str) -> list[tuple[str, str | None, list[tuple[str, str]]]] | None:
    """avfilter_graph_segment_parse: (filter, instance, options) of a one-chain, label-free graph,
    or None where FFmpeg refuses it or it is not such a graph."""
    graph = ctypes.c_void_p(FILT.avfilter_graph_alloc())
    seg = ctypes.POINTER(_Segment)()
    try:
        if FILT.avfilter_graph_segment_parse(graph, desc.encode(), 0, ctypes.byref(seg)) < 0:
            return None
        s = seg.contents
        if s.nb_chains != 1 or s.scale_sws_opts:
            return None
        chain = s.chains[0].contents
        out = []
        for i in range(chain.nb_filters):
            p = chain.filters[i].contents
            if p.nb_inputs or p.nb_outputs:
                return None
            opts, cur = [], ctypes.POINTER(_Entry)()
            while p.opts:
                cur = UTIL.av_dict_iterate(p.opts, cur)
                if not cur:
                    break
                opts.append((cur.contents.key.decode(), cur.contents.value.decode()))
            instance = p.instance_name.decode() if p.instance_name is not None else None
            out.append((p.filter_name.decode(), instance, opts))
        return out
    finally:
        FILT.avfilter_graph_segment_free(ctypes.byref(seg))
        FILT.avfilter_graph_free(ctypes.byref(graph))


def ours(desc: str) -> list[tuple[str, str | None, list[tuple[str, str]]]]:
    out = []
    for raw in split_graph(desc):
        with avoptions.Filter(raw.name) as f:
            step = split_options(raw.args, [o.name for o in f.shorthand()], raw.name)
        out.append((raw.name, raw.instance, step.options))
    return out


# -- 1. the grammar ------------------------------------------------------------------------------

TOKENS = [
    "a",
    "  a b  ",
    r"a\:b",
    "'a:b'",
    r"'a\'b",
    "'unterminated",
    "a\\",
    r"\ a\ ",
    "' a '",
    "a' 'b",
    r"\\",
    "''",
    "a:b",
    "x=y,z",
    "\t\n a",
]


@pytest.mark.parametrize("text", TOKENS)
@pytest.mark.parametrize("term", [":", "=,;[", "[],;"])
def test_get_token_is_av_get_token(text, term):
    token, end = get_token(text, 0, term)
    assert (token, len(text[:end].encode())) == ffmpeg_get_token(text, term)


@GRAMMAR
@given(st.text(alphabet=" \\':=,;[]@abc\t", max_size=24), st.sampled_from([":", "=,;[", "[],;"]))
def test_get_token_is_av_get_token_for_any_text(text, term):
    token, end = get_token(text, 0, term)
    assert (token, len(text[:end].encode())) == ffmpeg_get_token(text, term)


@GRAMMAR
@given(st.text(max_size=30))
def test_escaped_values_read_back_unchanged_in_ffmpeg(value):
    if "\x00" in value:
        return
    assert ffmpeg_get_token(escape(value), ":")[0] == value


ISSUE_AND_VARIANTS = [
    "curves=plot='/tmp/x'",
    r"curves=plot=\'/tmp/x\'",
    "curves=plot=/tmp/x",
    "curves=psfile='/etc/passwd'",
    r"curves=preset=none\:plot=/tmp/x",  # the escaped ':' separates options one level down
    r"curves=preset=none\\:plot=/tmp/x",  # ...and this one stays in the value
    "curves=none:'0/0 1/1':plot=x",  # positional: preset, master, ...
    "deshake=0:0:-1:-1:16:16:mirror:8:160:0:stats.log",  # the 11th positional is 'filename'
    "firequalizer='gain(f)':dumpfile=x.txt",
    "scale=64:48:flags=bicubic",
    "scale=w='iw/2':h=-2,setpts=PTS-STARTPTS",
    "drawbox@box=x=1:y=2:color='red@0.5':t=fill",
    r"select='eq(n\,0)+gte(n\,3)'",
    "hflip , vflip ,  null",
    "  scale = 64 : 48 ",
    "scale=width=64:height=48",
    "format=pix_fmts=yuv420p|yuvj420p",
    r"drawbox=color=a\\\:b",
]


@pytest.mark.parametrize("desc", ISSUE_AND_VARIANTS)
def test_chains_parse_as_ffmpegs_graph_parser_parses_them(desc):
    assert ours(desc) == ffmpeg_parse(desc)


NAMES = ["scale", "drawbox", "hflip", "curves", "setpts", "volume", "deshake"]


@GRAMMAR
@given(
    st.lists(st.tuples(st.sampled_from(NAMES), st.text(alphabet="\\':=,@ abw1/", max_size=14)), min_size=1, max_size=3)
)
def test_any_chain_we_accept_is_what_ffmpeg_reads(parts):
    desc = ",".join(f"{name}{args}" if args.startswith("@") else f"{name}={args}" for name, args in parts)
    try:
        mine = ours(desc)
    except FilterSyntaxError:
        return  # stricter than FFmpeg (empty names, trailing commas) is fine; different is not
    except LookupError:
        return  # an unknown filter name (from '@' splitting): refused by check_filters
    assert mine == ffmpeg_parse(desc)


def test_written_back_arguments_set_exactly_the_checked_values_in_ffmpeg():
    """What the encoder hands to FFmpeg (every option named, escaped) reads back value for value."""
    desc = r"drawbox=x=1:y='2':color=red@0.5:t=fill,setpts=expr=PTS\\\:1\,2,scale=w=' iw':h=ih\\\ "
    for raw in split_graph(desc):
        with avoptions.Filter(raw.name) as f:
            step = split_options(raw.args, [o.name for o in f.shorthand()], raw.name)
            args = step.args()
            assert args is not None
            assert UTIL.av_opt_set_from_string(f.private, args.encode(), None, b"=", b":") >= 0
            for key, value in step.options:
                out = ctypes.c_void_p()
                assert UTIL.av_opt_get(f.private, key.encode(), 0, ctypes.byref(out)) >= 0
                read = ctypes.string_at(out).decode()
                UTIL.av_free(out)
                assert read == value or (key in ("x", "y") and float(read) == float(value)), (key, read, value)


# -- 2. the allowlists, against FFmpeg's tables ---------------------------------------------------


def _rows(obj: avoptions.FFObject):
    return [(scope, o) for scope, o in avoptions.iter_tables(obj) if not o.is_const]


@pytest.mark.parametrize("name", sorted(allowlist.VIDEO_FILTERS | allowlist.AUDIO_FILTERS))
def test_no_allowed_filter_has_an_option_naming_a_file_url_or_command(name):
    with avoptions.Filter(name) as f:
        private = [o for o in f.options("private") if not o.is_const]
    for o in private:
        assert not allowlist.FILE_WORDS.search(f"{o.name} {o.help}"), (name, o)
        assert o.type != avoptions.OptionType.BINARY, (name, o)
        assert o.name != "name", "PyAV's Graph.add would take it for the instance name"
    generic = allowlist.FILTER_CONTEXT_OPTIONS
    assert generic == {"enable"}


def test_the_filters_of_the_issue_are_not_allowed_and_are_known_to_write():
    for name, option in [
        ("curves", "plot"),
        ("curves", "psfile"),
        ("deshake", "filename"),
        ("firequalizer", "dumpfile"),
        ("loudnorm", "stats_file"),
    ]:
        assert name not in allowlist.VIDEO_FILTERS | allowlist.AUDIO_FILTERS
        with avoptions.Filter(name) as f:
            row = next(o for o in f.options("private") if o.name == option)
        assert allowlist.FILE_WORDS.search(f"{row.name} {row.help}"), row  # the check above would catch it


#: Allowed options whose help text says "file" about the output file itself (its layout), reviewed.
OUTPUT_FILE_LAYOUT = {
    ("avi", "reserve_index_space"),
    ("matroska", "reserve_index_space"),
    ("webm", "reserve_index_space"),
    ("matroska", "live"),
    ("webm", "live"),
    ("flac", "write_header"),
    ("mp3", "write_xing"),
    ("wav", "rf64"),
    ("flv", "no_duration_filesize"),
}


def test_no_allowed_encoder_or_muxer_option_names_a_file_in_any_encoder_or_muxer():
    """Every allowed name, wherever FFmpeg knows it (every encoder and muxer this build has): no
    alias or help text of it names a file, URL or command, and no flag value it allows does either
    (except the reviewed few that speak of the output file's own layout)."""
    checked = 0
    kinds = [
        (
            avoptions.Encoder,
            sorted(ffmpeg.video_encoders()) + sorted(ffmpeg.audio_encoders()),
            allowlist.ENCODER_OPTIONS,
        ),
        (avoptions.Muxer, sorted(ffmpeg.muxers()), allowlist.MUXER_OPTIONS),
    ]
    for kind, names, allowed in kinds:
        for name in names:
            try:
                obj = kind(name)
            except (LookupError, MemoryError):
                continue
            with obj:
                for scope, o in _rows(obj):
                    if o.name not in allowed:
                        continue
                    checked += 1
                    words = " ".join([*obj.aliases(avoptions.Found(scope, o)), o.help])
                    assert (name, o.name) in OUTPUT_FILE_LAYOUT or not allowlist.FILE_WORDS.search(words), (name, o)
                    assert o.type != avoptions.OptionType.BINARY, (name, o)
                    if o.type == avoptions.OptionType.FLAGS and o.unit:
                        for c in obj.constants(scope, o.unit):
                            if o.name not in allowlist.FLAG_VALUES or c.name in allowlist.FLAG_VALUES[o.name]:
                                assert (name, c.name) in OUTPUT_FILE_LAYOUT or not re_pass(c.name), (name, c.name)
    assert checked > 1000


def re_pass(name: str) -> bool:
    return bool(allowlist.FILE_WORDS.search(name)) or name.startswith("pass")


def test_library_parameters_allow_no_file_keys_and_no_negation_lookalikes():
    for option, params in allowlist.PARAMS.items():
        for key in params.keys:
            assert not allowlist.FILE_WORDS.search(key), (option, key)
            assert key not in ("pass", "stats", "analysis-save", "analysis-load", "csv", "dump-yuv", "recon")
            if params.x26x_names:
                assert not key.startswith("no"), (option, key)  # x264 and x265 would read 'no...' as a negation
        assert set(params.caps) <= params.keys


def test_what_framecast_adds_itself_is_allowed():
    """Live and crash-safe defaults (destinations.py) pass the checks they skip."""
    s = Settings()
    options, _ = destinations.live_video_defaults("libx264", Fraction(30), {}, {})
    allowlist.check_encoder_options(s, "libx264", options, "o")
    allowlist.check_encoder_options(
        s, "libx265", destinations.live_video_defaults("libx265", Fraction(30), {}, {})[0], "o"
    )
    allowlist.check_muxer_options(s, "flv", destinations.live_muxer_options("flv", {}), "o")
    for muxer in ("mp4", "mov", "matroska", "webm", "mpegts"):
        allowlist.check_muxer_options(s, muxer, destinations.crash_safe_options(muxer, {}), "o")


def test_operators_extend_each_list():
    s = Settings(
        extra_filters="curves",
        extra_encoder_options="x264opts,flags.pass1,x264-params.zones",
        extra_muxer_options="movflags.rtphint",
    )
    assert allowlist.check_filters(s, "video", "curves=preset=vintage", "f")[0].options == [("preset", "vintage")]
    allowlist.check_encoder_options(
        s, "libx264", {"x264opts": "ref=2", "flags": "+pass1", "x264-params": "zones=0,10,q=20"}, "o"
    )
    allowlist.check_muxer_options(s, "mp4", {"movflags": "+rtphint"}, "o")
    with pytest.raises(InvalidConfig, match="looks like a path or URL"):  # extended, still no paths
        allowlist.check_filters(s, "video", "curves=plot=/tmp/x", "f")
    with pytest.raises(InvalidConfig, match="'curves' is not allowed"):
        allowlist.check_filters(Settings(), "video", "curves=preset=vintage", "f")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"flags": "+pass1"}, "pass1 is not allowed"),
        ({"flags": "0x400"}, "pass2 is not allowed"),
        ({"flags": "256*2"}, "pass1 is not allowed"),
        ({"flags": "+global_header+pass1+pass2"}, "values pass1, pass2 are not allowed"),
        ({"rc-lookahead": "61"}, "cap of 60"),
        ({"refs": "8*8"}, "refs 64 is above this server's cap of 16"),
        ({"bf": "17"}, "cap of 16"),
        ({"x264-params": "rc_lookahead=250"}, "cap of 60"),
        ({"x264-params": "ref=0x40"}, "whole number"),
        ({"x264-params": "pass=1"}, "names files"),
        ({"x264-params": "no-pass=0"}, "names files"),
        ({"x264-params": "keyint=30:dump-yuv=x.yuv"}, "names files"),
        ({"x264-params": "opencl=1"}, "key 'opencl' is not allowed"),
        ({"me_method": "dia", "motion-est": "hex", "crf": "x"}, "cannot take 'x' for 'crf'"),
        ({"preset": "ultrafast\x00/tmp/x"}, "NUL"),
    ],
)
def test_encoder_options_are_checked_as_ffmpeg_reads_them(options, message):
    with pytest.raises(InvalidConfig, match=message):
        allowlist.check_encoder_options(Settings(), "libx264", options, "streams.0.encoder_option")


def test_enumerations_take_only_their_named_values():
    """scale's out_primaries=13..21 are in FFmpeg's range but name nothing, and crash FFmpeg 8.0."""
    with pytest.raises(InvalidConfig, match="20 is not a named value of option 'out_primaries'"):
        allowlist.check_filters(Settings(), "video", "scale=out_color_matrix=bt2020:out_primaries=20:h=iw/2", "f")
    steps = allowlist.check_filters(Settings(), "video", "scale=out_primaries=bt2020:out_transfer=14", "f")
    assert steps[0].options == [("out_primaries", "bt2020"), ("out_transfer", "14")]  # 14 is bt2020-10's number


def test_nul_characters_are_refused_in_chains():
    with pytest.raises(InvalidConfig, match="NUL"):
        allowlist.check_filters(Settings(), "video", "hflip\x00,curves=plot=/tmp/x", "f")


def test_encoder_options_ffmpeg_does_not_know_pass_through_as_before():
    allowlist.check_encoder_options(Settings(), "libx264", {"bogus_knob": "1"}, "o")  # comes back "not used"
    with pytest.raises(InvalidConfig, match="names files"):
        allowlist.check_encoder_options(Settings(), "libx264", {"passlogfile_typo": "x"}, "o")


# -- 3. a real server ----------------------------------------------------------------------------

TOKEN = "fcallow" + secrets.token_hex(4)
VIDEO = {"type": "video", "frame_rate": 30, "width": 64, "height": 48}
AUDIO = {"type": "audio", "sample_rate": 8000, "num_channels": 1}
T = f"/tmp/{TOKEN}"

REFUSED = [
    # the issue's examples
    ({**VIDEO, "filter_desc": f"curves=plot='{T}-a.plt'"}, "filter_desc", "'curves'"),
    ({**VIDEO, "encoder_option": {"flags": "+pass1"}}, "encoder_option.flags", "pass1"),
    ({**VIDEO, "encoder_option": {"x264-params": "pass=1"}}, "encoder_option.x264-params", "names files"),
    (
        {**VIDEO, "encoder": "libx265", "encoder_option": {"x265-params": f"analysis-save={T}-b.dat"}},
        "encoder_option.x265-params",
        "names files",
    ),
    ({**VIDEO, "filter_desc": f"deshake=0:0:-1:-1:16:16:mirror:8:160:0:{TOKEN}-c.log"}, "filter_desc", "'deshake'"),
    ({**AUDIO, "filter_desc": f"firequalizer='gain(f)':dumpfile={TOKEN}-d.txt"}, "filter_desc", "'firequalizer'"),
    (
        {**AUDIO, "filter_desc": f"firequalizer=1:'':0:5:hann:0:0:0:linlog:{TOKEN}-e.txt"},
        "filter_desc",
        "'firequalizer'",
    ),
    # variants
    ({**VIDEO, "filter_desc": rf"curves=plot=\'{T}-f.plt\'"}, "filter_desc", "'curves'"),
    ({**VIDEO, "filter_desc": f"hflip,curves=psfile={T}-g.acv"}, "filter_desc", "'curves'"),
    ({**VIDEO, "filter_desc": rf"curves=preset=none\:plot={T}-h.plt"}, "filter_desc", "'curves'"),
    ({**VIDEO, "filter_desc": rf"drawbox=x=1\:textfile={T}-i"}, "filter_desc", "no option 'textfile'"),
    ({**VIDEO, "filter_desc": f"scale=64:48:/w={T}-j"}, "filter_desc", "loads an option's value from a file"),
    ({**VIDEO, "filter_desc": f"scale=w='{T}-k':h=48"}, "filter_desc", "looks like a path or URL"),
    ({**VIDEO, "filter_desc": "hflip=threads=64"}, "filter_desc", "not allowed in a filter chain"),
    ({**AUDIO, "filter_desc": f"loudnorm=stats_file={TOKEN}-l.json"}, "filter_desc", "'loudnorm'"),
    ({**VIDEO, "encoder_option": {"flags": "pass2"}}, "encoder_option.flags", "pass2"),
    ({**VIDEO, "encoder_option": {"flags": "+cgop+0x200"}}, "encoder_option.flags", "pass1"),
    (
        {**VIDEO, "encoder_option": {"x264-params": f"keyint=30:stats='{T}-m.log'"}},
        "encoder_option.x264-params",
        "names files",
    ),
    ({**VIDEO, "encoder_option": {"x264-params": f"stats={TOKEN}-n.log"}}, "encoder_option.x264-params", "names files"),
    ({**VIDEO, "encoder_option": {"passlogfile": f"{TOKEN}-o"}}, "encoder_option.passlogfile", "names files"),
    ({**VIDEO, "encoder_option": {"stats": f"{TOKEN}-p"}}, "encoder_option.stats", "names files"),
    ({**VIDEO, "encoder_option": {"x264opts": "pass=1"}}, "encoder_option.x264opts", "not allowed"),
    (
        {**VIDEO, "encoder": "libx265", "encoder_option": {"x265-stats": f"{TOKEN}-q"}},
        "encoder_option.x265-stats",
        "names files",
    ),
    (
        {**VIDEO, "encoder": "libx265", "encoder_option": {"x265-params": f"csv={TOKEN}-r.csv"}},
        "encoder_option.x265-params",
        "names files",
    ),
    (
        {**VIDEO, "encoder": "libx265", "encoder_option": {"x265-params": "rc-lookahead=250"}},
        "encoder_option.x265-params",
        "cap of 60",
    ),
    ({**VIDEO, "encoder_option": {"rc-lookahead": "250"}}, "encoder_option.rc-lookahead", "cap of 60"),
    ({**VIDEO, "encoder_option": {"refs": "40"}}, "encoder_option.refs", "cap of 16"),
    (
        {**VIDEO, "encoder": "libvpx-vp9", "encoder_option": {"lag-in-frames": "100"}},
        "encoder_option.lag-in-frames",
        "cap of 25",
    ),
    (
        {**VIDEO, "encoder": "libvpx-vp9", "encoder_option": {"rc_lookahead": "1000"}},  # alias of lag-in-frames
        "encoder_option.rc_lookahead",
        "expected an integer from 0 to 25",
    ),
]


def _tree(root: Path, skip: Path | None = None) -> set[str]:
    found = set()
    for base, dirs, files in os.walk(root):
        if skip is not None and Path(base) == skip:
            dirs[:] = []
            continue
        for name in dirs + files:
            found.add(os.path.join(base, name))
    return found


def _tokened_under_tmp() -> list[str]:
    hits = []
    for base, dirs, files in os.walk("/tmp"):
        if base.count(os.sep) > 6:
            dirs[:] = []
        hits += [os.path.join(base, n) for n in dirs + files if TOKEN in n]
    return hits


@pytest.fixture
def outside(server):
    """The server's working directory (less its output dir and logs) and /tmp, before and after."""
    cwd = server.output_dir.parent

    def snapshot() -> tuple[set[str], set[str]]:
        return ({p for p in _tree(cwd, skip=server.output_dir) if not p.endswith(".log")}, set(os.listdir("/tmp")))

    before = snapshot()
    yield
    after = snapshot()
    assert after[0] - before[0] == set(), "files appeared in the server's working directory"
    new_tmp = after[1] - before[1]
    assert not [n for n in new_tmp if TOKEN in n or n.startswith(("x264", "x265"))], new_tmp
    assert _tokened_under_tmp() == []
    assert not [p for p in _tree(server.output_dir) if TOKEN in p]


@pytest.mark.parametrize("stream, field, message", REFUSED, ids=[f"{i}-{r[1]}" for i, r in enumerate(REFUSED)])
def test_the_issues_configs_and_their_variants_are_refused(api, server, outside, stream, field, message):
    fmt = "matroska"
    body = {
        "destination": {"type": "server_file", "path": f"allow/{secrets.token_hex(4)}.mkv"},
        "format": fmt,
        "streams": [stream],
    }
    response = api.post("/v1/sessions", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == f"streams.0.{field}", error
    assert message in error["message"], error


@pytest.mark.parametrize(
    "options, muxer, message",
    [
        ({"movflags": "+rtphint"}, "mp4", "rtphint is not allowed"),
        ({"movflags": "frag_keyframe+0x1"}, "mp4", "rtphint is not allowed"),
        ({"fflags": "+genpts"}, "mp4", "genpts is not allowed"),
        ({"protocol_whitelist": "file,http"}, "matroska", "names files"),
        ({"cluster_time_limit": f"{T}"}, "matroska", "path or URL"),
    ],
)
def test_muxer_options_are_refused_naming_the_option(api, outside, options, muxer, message):
    ext = {"mp4": "mp4", "matroska": "mkv"}[muxer]
    body = {
        "destination": {"type": "server_file", "path": f"allow/{secrets.token_hex(4)}.{ext}"},
        "streams": [VIDEO],
        "options": options,
    }
    response = api.post("/v1/sessions", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == f"options.{next(iter(options))}", error
    assert message in error["message"], error


def test_lookalikes_are_allowed_and_encode_inside_the_output_dir(server, outside):
    """Allowed filters and options, spelled with quotes, escapes, aliases and positional values, run."""
    path = f"allow/ok-{secrets.token_hex(4)}.mp4"
    w = framecast.StreamWriter(framecast.ServerFile(path), server=server.url)
    w.add_video_stream(
        30,
        64,
        48,
        filter_desc=r"scale=width=64:height='48',drawbox=x=1:y=1:w=8:h=8:color='red@0.5':t=fill,"
        r"select='gte(n\,0)',setpts=PTS-STARTPTS,format=pix_fmts=yuv420p|yuvj420p",
        encoder_option={
            "preset": "ultrafast",
            "flags": "+global_header+cgop",
            "refs": "2",
            "bf": "2",
            "x264-params": "keyint=30:min-keyint=30:no-mbtree=1:rc_lookahead=10",
            "me_method": "dia",
        },
    )
    w.add_audio_stream(8000, 1, filter_desc="volume=0.5,highpass=f=200:p=2,afade=t=in:d=0.1")
    with w.open(option={"movflags": "+frag_keyframe+empty_moov+default_base_moof"}):
        w.write_video_chunk(0, patterns(10, 48, 64))
        w.write_audio_chunk(1, (np.sin(np.arange(8000) / 8) * 0.3).astype(np.float32)[:, None])
    info = decode(server.output_dir / path)
    assert info["streams"][0]["frame_count"] == 10 and info["streams"][1]["sample_count"] > 0
    assert not (server.output_dir / ".encoders").exists() or not any(
        TOKEN in p for p in _tree(server.output_dir / ".encoders")
    )


@pytest.mark.parametrize("realtime", [False, True], ids=["direct", "paced"])
def test_encoders_work_inside_the_output_dir(own_server, tmp_path, realtime):
    """What an encoder still writes to a relative path (here x264's first-pass statistics, which an
    operator allowed) lands in the output dir's .encoders, not in the server's working directory.

    x264 gives the file its name only when the encoder is freed, so this also holds the encoder
    process to freeing its encoders before it reports the session closed: before, they were freed
    when the process exited, after the client had been told, and the file was sometimes not there
    yet."""
    server = own_server(FRAMECAST_EXTRA_ENCODER_OPTIONS="flags.pass1")
    before = set(os.listdir(server.output_dir.parent))
    w = framecast.StreamWriter(framecast.ServerFile("pass1.mkv"), server=server.url, realtime=realtime)
    w.add_video_stream(30, 64, 48, encoder_option={"flags": "+pass1", "preset": "ultrafast"})
    with w.open():
        w.write_video_chunk(0, patterns(5, 48, 64))
    assert (server.output_dir / ".encoders" / "x264_2pass.log").exists()
    assert {n for n in set(os.listdir(server.output_dir.parent)) - before if not n.endswith(".log")} == set()
