"""Fuzzing the allowlists from FFmpeg's own option tables, and running whatever they let through.

Hypothesis builds filter chains from every single-input, single-output filter this FFmpeg has, with
options drawn from each filter's table and values of each option's type (strings include absolute,
relative and URL-like names), plus encoder options from libx264's tables and x264-params entries,
and muxer options from matroska's. Each config goes through ``make_plan``, exactly as a session's
would. Every config it accepts is then encoded for real: the encoder process's own code
(``encoder.main._enter_workdir``, ``encoder.writer.SessionWriter``) in a subprocess under ``strace -f``, started in
an empty working directory. Nothing accepted may create, write, rename or remove a file outside the
output directory, nor create a socket.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framecast_server.config import Settings
from framecast_server.errors import InvalidConfig
from framecast_server.models import SessionConfig
from framecast_server.planning import allowlist, avoptions, ffmpeg
from framecast_server.planning.avoptions import OptionType
from framecast_server.planning.filtergraph import WHITESPACES, escape
from framecast_server.planning.plan import make_plan

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile("ci" if os.environ.get("CI") else "dev")

TOKEN = "fcfuzz" + secrets.token_hex(4)
MAX_RUNS = 40  # accepted configs encoded under strace: about a second each on a slow machine
RUN_TIMEOUT = 240  # seconds for all of them


def _single_io(media: str) -> list[str]:
    """Filters with one input and one output pad of ``media`` (libavfilter's pad tables)."""
    lib = ffmpeg._bundled("libavfilter")
    lib.avfilter_get_by_name.restype = ctypes.c_void_p
    lib.avfilter_get_by_name.argtypes = [ctypes.c_char_p]
    lib.avfilter_filter_pad_count.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.avfilter_pad_get_type.argtypes = [ctypes.c_void_p, ctypes.c_int]
    kind = {"video": 0, "audio": 1}[media]  # AVMEDIA_TYPE_*
    names = []
    for name in sorted(av.filter.filters_available):
        filt = lib.avfilter_get_by_name(name.encode())
        _, _, inputs, outputs = (ctypes.c_void_p * 4).from_address(filt)  # AVFilter: name, description, pads
        if lib.avfilter_filter_pad_count(filt, 0) == 1 == lib.avfilter_filter_pad_count(
            filt, 1
        ) and lib.avfilter_pad_get_type(inputs, 0) == kind == lib.avfilter_pad_get_type(outputs, 0):
            names.append(name)
    return names


FILTERS = {"video": _single_io("video"), "audio": _single_io("audio")}
STRINGS = [
    f"/tmp/{TOKEN}-abs",
    f"{TOKEN}-rel.txt",
    f"../{TOKEN}-up",
    f"file:{TOKEN}",
    "tcp://127.0.0.1:9",
    "iw/2",
    "0",
    "1",
    "red",
    "x",
    "PTS-STARTPTS",
    "a|b",
    "'q'",
    " ",
]


def _value(option: avoptions.Option, consts: list[str]) -> st.SearchStrategy[str]:
    """Values of an option's type, from its own table (range, named constants)."""
    t = option.type
    named = [st.sampled_from(consts)] if consts else []
    if t == OptionType.FLAGS:
        return st.lists(st.sampled_from(consts or ["0"]), min_size=1, max_size=3).map("+".join)
    if t in (OptionType.INT, OptionType.INT64, OptionType.UINT, OptionType.UINT64, OptionType.BOOL):
        lo, hi = max(option.min, -100), min(option.max, 100)
        ints = st.integers(int(lo), int(hi)).map(str) if lo <= hi else st.just("0")
        return st.one_of(ints, *named)
    if t in (OptionType.DOUBLE, OptionType.FLOAT):
        lo, hi = max(option.min, -100.0), min(option.max, 100.0)
        nums = st.floats(lo, hi, allow_nan=False).map(lambda v: f"{v:.3g}") if lo <= hi else st.just("0")
        return st.one_of(nums, *named)
    simple = {
        OptionType.DURATION: "0.5",
        OptionType.COLOR: "red",
        OptionType.IMAGE_SIZE: "32x24",
        OptionType.PIXEL_FMT: "yuv420p",
        OptionType.SAMPLE_FMT: "fltp",
        OptionType.VIDEO_RATE: "25",
        OptionType.RATIONAL: "1/2",
        OptionType.CHLAYOUT: "mono",
        OptionType.BINARY: "00",
        OptionType.DICT: "a=b",
    }
    if t in simple:
        return st.one_of(st.just(simple[t]), st.sampled_from(STRINGS))
    return st.sampled_from(STRINGS)


def _graph_escape(args: str) -> str:
    """Escape an argument string for the graph level (its terminators, quotes and blanks)."""
    return "".join("\\" + c if c in "\\'[],;" or c in WHITESPACES else c for c in args)


@st.composite
def filter_step(draw: st.DrawFn, media: str) -> str:
    allowed = sorted(set(FILTERS[media]) & (allowlist.VIDEO_FILTERS | allowlist.AUDIO_FILTERS))
    name = draw(st.one_of(st.sampled_from(allowed), st.sampled_from(FILTERS[media])))  # half from the allowlist
    generic, private = avoptions.filter_table(name)
    rows = [o for o in private if not o.is_const]
    consts: dict[str | None, list[str]] = {
        o.unit: [c.name for c in private if c.is_const and c.unit == o.unit] for o in rows if o.unit
    }
    chosen = draw(st.lists(st.sampled_from(rows), max_size=3, unique_by=lambda o: o.name)) if rows else []
    if not chosen:
        return name
    pairs = [f"{o.name}={escape(draw(_value(o, consts.get(o.unit, []))))}" for o in chosen]
    if draw(st.booleans()) and rows:  # the first value positional, as FFmpeg's shorthand takes it
        first = pairs[0].split("=", 1)[1]
        pairs = [first] + pairs[1:] if chosen[0].name == rows[0].name else pairs
    return f"{name}={_graph_escape(':'.join(pairs))}"


def _table(kind: type, name: str) -> tuple[list[avoptions.Option], dict[str, list[str]]]:
    with kind(name) as obj:
        rows = [o for _, o in avoptions.iter_tables(obj) if not o.is_const]
        consts: dict[str, list[str]] = {}
        for _, o in avoptions.iter_tables(obj):
            if o.is_const and o.unit:
                consts.setdefault(o.unit, []).append(o.name)
    return rows, consts


X264_ROWS, X264_CONSTS = _table(avoptions.Encoder, "libx264")
MKV_ROWS, MKV_CONSTS = _table(avoptions.Muxer, "matroska")
X264_PARAM_KEYS = sorted(allowlist.PARAMS["x264-params"].keys) + [
    "pass",
    "stats",
    "dump-yuv",
    "no-stats",
    "cqmfile",
    "opencl",
    "qpfile",
    "rc_lookahead",
    "psnr",
]


@st.composite
def options_from(draw: st.DrawFn, rows: list[avoptions.Option], consts: dict[str, list[str]]) -> dict[str, str]:
    allowed = [o for o in rows if o.name in allowlist.ENCODER_OPTIONS | allowlist.MUXER_OPTIONS]
    pick = st.one_of(st.sampled_from(allowed), st.sampled_from(rows))  # half from the allowlist
    chosen = draw(st.lists(pick, max_size=3, unique_by=lambda o: o.name))
    out = {}
    for o in chosen:
        if o.name == "x264-params":
            entries = draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(X264_PARAM_KEYS), st.sampled_from(["1", "0", "30", "250", f"{TOKEN}.log"])
                    ),
                    min_size=1,
                    max_size=3,
                )
            )
            out[o.name] = ":".join(f"{k}={v}" for k, v in entries)
        else:
            out[o.name] = draw(_value(o, consts.get(o.unit or "", [])))
    return out


@st.composite
def session(draw: st.DrawFn) -> dict:
    media = draw(st.sampled_from(["video", "audio"]))
    chain = ",".join(draw(st.lists(filter_step(media), min_size=1, max_size=3)))
    if media == "video":
        stream = {
            "type": "video",
            "frame_rate": 25,
            "width": 64,
            "height": 48,
            "filter_desc": chain,
            "encoder": "libx264",
            "encoder_option": draw(options_from(X264_ROWS, X264_CONSTS)),
        }
    else:
        stream = {"type": "audio", "sample_rate": 16000, "num_channels": 2, "filter_desc": chain, "encoder": "flac"}
    return {
        "destination": {"type": "server_file", "path": "out.mkv"},
        "format": "matroska",
        "streams": [stream],
        "options": draw(options_from(MKV_ROWS, MKV_CONSTS)),
    }


RUNNER = r"""
import os, pickle, sys
import numpy as np
from framecast_server.encoder.writer import SessionWriter
from framecast_server.encoder.main import _enter_workdir
plans = pickle.load(open(sys.argv[1], "rb"))
for i, plan in enumerate(plans):
    try:
        os.stat(f"/{sys.argv[2]}-marker-{i}")
    except OSError:
        pass
    pid = os.fork()  # each config in a process of its own, as a session's encoder is: a crash is its own
    if pid:
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            print(i, "crashed: signal", os.WTERMSIG(status), flush=True)
        continue
    try:
        _enter_workdir(plan.workdir)
        writer = SessionWriter(plan)
        writer.start_files()
        s = plan.streams[0]
        if s.type == "video":
            writer.write(0, np.random.default_rng(i).integers(0, 255, (5, 3, s.height, s.width), dtype=np.uint8), None)
        else:
            writer.write(0, np.zeros((4000, s.num_channels), dtype=np.float32), None)
        writer.close()
        print(i, "encoded", flush=True)
    except Exception as exc:
        print(i, "failed:", type(exc).__name__, str(exc)[:200], flush=True)
    os._exit(0)
"""

#: syscalls that create, change or remove a name, or open for writing
_CHANGES = re.compile(
    r"^(\d+)\s+(mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|rmdir|link|linkat|symlink|symlinkat|"
    r"truncate|creat|chmod|fchmodat|utimensat)\("
)
_OPEN = re.compile(r'^(\d+)\s+(open|openat|openat2)\((?:AT_FDCWD, |\d+<[^>]*>, )?"([^"]*)", ([A-Z_|]+)')
_SOCKET = re.compile(r"^(\d+)\s+(socket|connect|bind|listen)\(")
_MARKER = re.compile(r'"/' + TOKEN + r'-marker-(\d+)"')
_CHDIR = re.compile(r'^(\d+)\s+chdir\("([^"]*)"\)\s+=\s+0')


def _violations(log: str, start_cwd: str, root: Path) -> list[str]:
    """Every file change outside ``root`` and every socket call, with the config it happened under."""
    found = []
    current = "before the first config"
    cwds: dict[str, str] = {}  # pid -> working directory; the runner never moves, its forks start where it is
    allowed_roots = (str(root), "/dev/null", "/dev/shm/")  # shm: PyAV/numpy never, but harmless scratch
    for line in log.splitlines():
        marker = _MARKER.search(line)
        if marker:
            current = f"config {marker.group(1)}"
            continue
        pid = line.split(" ", 1)[0]
        cwd = cwds.get(pid, start_cwd)
        chdir = _CHDIR.match(line)
        if chdir:
            cwds[pid] = os.path.join(cwd, chdir.group(2))
            continue
        if _SOCKET.match(line):
            found.append(f"{current}: {line}")
            continue
        opened = _OPEN.match(line)
        if opened:
            path, flags = opened.group(3), opened.group(4)
            if not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", flags):
                continue
            full = os.path.normpath(os.path.join(cwd, path))
            if not full.startswith(allowed_roots):
                found.append(f"{current}: {line}")
            continue
        if _CHANGES.match(line):
            paths = re.findall(r'"([^"]*)"', line)
            if any(not os.path.normpath(os.path.join(cwd, p)).startswith(allowed_roots) for p in paths):
                found.append(f"{current}: {line}")
    return found


def test_whatever_the_allowlists_accept_runs_without_files_outside_or_sockets(tmp_path):
    assert shutil.which("strace"), "strace is needed (scripts/system-deps installs it)"
    out = tmp_path / "output"
    out.mkdir()
    conf = Settings(output_dir=out)
    accepted: list = []
    refused = 0

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(session())
    def collect(body: dict) -> None:
        nonlocal refused
        try:
            plan = make_plan(SessionConfig.model_validate(body), conf)
        except InvalidConfig:
            refused += 1
            return
        plan.first.path = str(out / f"{len(accepted)}.mkv")
        accepted.append(plan)

    collect()
    assert refused > 50 and len(accepted) >= 10, (refused, len(accepted))
    # The richest accepted configs (most filters, options and entries) are the ones encoded.
    accepted.sort(key=lambda p: -len(f"{p.streams[0].filter_desc}{p.streams[0].encoder_option}{p.first.options}"))
    accepted = accepted[:MAX_RUNS]

    lines, problems = _run_under_strace(accepted, tmp_path, out)
    assert len(lines) == len(accepted)
    crashed = [int(line.split()[0]) for line in lines if "crashed" in line]
    assert crashed == [], "FFmpeg crashed on accepted configs:\n" + "\n".join(
        f"{lines[i]}: {accepted[i].streams[0].filter_desc!r} {accepted[i].streams[0].encoder_option} "
        f"{accepted[i].options}"
        for i in crashed
    )
    assert sum("encoded" in line for line in lines) >= len(accepted) // 2, lines
    assert problems == [], (
        "\n".join(problems[:20])
        + "\n"
        + "\n".join(
            f"config {i}: {p.streams[0].filter_desc} {p.streams[0].encoder_option} {p.first.options}"
            for i, p in enumerate(accepted)
        )
    )
    assert not [p for p in Path("/tmp").iterdir() if TOKEN in p.name]


def _run_under_strace(plans: list, tmp_path: Path, out: Path) -> tuple[list[str], list[str]]:
    """Encode ``plans`` in one subprocess under strace, started in an empty directory; its output
    lines (one per plan) and every violation found in the trace."""
    pickled = tmp_path / "plans.pickle"
    pickled.write_bytes(pickle.dumps(plans))
    empty_cwd = tmp_path / "cwd"
    empty_cwd.mkdir(exist_ok=True)
    log = tmp_path / "strace.log"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        result = subprocess.run(
            [
                "strace",
                "-f",
                "--seccomp-bpf",
                "-qq",
                "-s",
                "256",
                "-e",
                "trace=%file,%network",
                "-o",
                str(log),
                sys.executable,
                "-c",
                RUNNER,
                str(pickled),
                TOKEN,
            ],
            cwd=empty_cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        done = [line for line in (exc.stdout or b"").decode(errors="replace").splitlines() if line.strip()]
        stuck = int(done[-1].split()[0]) + 1 if done else 0
        s = plans[stuck].streams[0]
        pytest.fail(
            f"config {stuck} ran over {RUN_TIMEOUT} s: {s.filter_desc!r} {s.encoder_option} {plans[stuck].options}"
        )
    assert result.returncode == 0, result.stderr[-3000:]
    problems = _violations(log.read_text(), str(empty_cwd), out.resolve())
    if list(empty_cwd.iterdir()):
        problems.append(f"files in the encoder's starting directory: {list(empty_cwd.iterdir())}")
    return result.stdout.splitlines(), problems


def test_the_watch_sees_a_filter_writing_outside(tmp_path):
    """The check above can fail: a filter an operator allowed (curves) writing its plot to /tmp."""
    out = tmp_path / "output"
    out.mkdir()
    conf = Settings(output_dir=out, extra_filters="curves")
    target = f"/tmp/{TOKEN}-watch.plt"
    body = {
        "destination": {"type": "server_file", "path": "w.mkv"},
        "format": "matroska",
        "streams": [
            {
                "type": "video",
                "frame_rate": 25,
                "width": 64,
                "height": 48,
                "filter_desc": f"curves=preset=vintage:plot={target[1:]}",
            }
        ],
    }
    plan = make_plan(SessionConfig.model_validate(body), conf)
    plan.streams[0].filter_desc = f"curves=preset=vintage:plot='{target}'"  # past the path check, as a bug would
    try:
        lines, problems = _run_under_strace([plan], tmp_path, out)
    finally:
        Path(target).unlink(missing_ok=True)
    assert lines == ["0 encoded"]
    assert any(target in p and "config 0" in p for p in problems), problems
