"""What a session config may ask of FFmpeg's filters, encoders and muxers: allowlists, not denylists.

A denylist over our own reading of FFmpeg's grammar kept losing to FFmpeg's reading (``plot='/x'``
is unquoted before use, ``\\:`` hides a name, positional arguments fill file options, ``+pass1``
makes x264 write stats files). So nothing is refused for looking bad; everything is allowed for
being known good, and checked the way FFmpeg will apply it:

- Filters: only those named here (``VIDEO_FILTERS``, ``AUDIO_FILTERS``), each chosen because none
  of its options names a file, URL, device or command, nor holds unbounded media in memory
  (``tests/test_allowlist.py`` re-checks every option of every allowed filter in FFmpeg's own
  tables). A chain is parsed as FFmpeg parses it (``filtergraph.py``), every option name resolved
  in the filter's table (aliases, positional arguments), and the encoder is handed the chain with
  every option named, so what runs is what was checked. Of the filter context's own options, only
  the timeline's ``enable`` expression.
- Encoder and muxer options: names resolved in the encoder's or muxer's real option tables
  (``avoptions.py``); a name FFmpeg knows must be allowed here (any of its aliases); values are
  parsed by FFmpeg itself and then checked: flags against the flag values allowed here (``+pass1``,
  ``pass1``, ``0x200`` are one bit to FFmpeg, and to this check), frame counts that buy memory
  against caps (``CAPS``), the entries of ``x264-params``/``x265-params``/``svtav1-params``
  against the keys allowed for that library. A name FFmpeg does not know at all reaches nothing:
  it is passed on and comes back as a "not used" warning, unless it looks like it names a file.
- Every string value, anywhere, that looks like a path or URL is refused as well: a second line,
  behind the allowlists, should one of them ever be wrong.

Operators extend each list: ``FRAMECAST_EXTRA_FILTERS``, ``FRAMECAST_EXTRA_ENCODER_OPTIONS``
(``name``, or ``x264-params.key`` for a library parameter) and ``FRAMECAST_EXTRA_MUXER_OPTIONS``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import av

from framecast_server.config import Settings
from framecast_server.errors import InvalidConfig
from framecast_server.planning import avoptions
from framecast_server.planning.avoptions import FFObject, Found, OptionType
from framecast_server.planning.filtergraph import FilterStep, FilterSyntaxError, split_graph, split_options

Media = Literal["video", "audio"]

# The allowlists are tables, kept dense so that a review sees them whole.
# fmt: off
#: Video filters whose every option is a number, an expression, a colour or a format.
VIDEO_FILTERS = frozenset({
    "avgblur", "bwdif", "chromakey", "colorbalance", "colorchannelmixer", "colorkey", "colorlevels",
    "colortemperature", "copy", "crop", "deband", "drawbox", "drawgrid", "edgedetect", "exposure", "fade",
    "format", "fps", "framestep", "gblur", "hflip", "hue", "huesaturation", "lut", "lutrgb", "lutyuv",
    "median", "negate", "noise", "null", "pad", "rotate", "scale", "select", "setdar", "setfield", "setpts",
    "setrange", "setsar", "settb", "shuffleplanes", "swapuv", "transpose", "trim", "unsharp", "vflip",
    "vibrance", "vignette", "yadif",
})

#: Audio filters likewise; none keeps more than a fraction of a second of audio per channel.
AUDIO_FILTERS = frozenset({
    "acompressor", "acopy", "acrusher", "adeclick", "adeclip", "afade", "afftdn", "aformat", "agate",
    "alimiter", "allpass", "anequalizer", "anull", "aphaser", "aresample", "asetnsamples", "asetpts",
    "asetrate", "asettb", "atempo", "atrim", "bandpass", "bandreject", "bass", "channelmap", "crystalizer",
    "dcshift", "deesser", "earwax", "equalizer", "extrastereo", "flanger", "highpass", "lowpass", "pan",
    "speechnorm", "stereotools", "treble", "tremolo", "vibrato", "volume",
})

#: Options of the filter context itself (AVFilterContext) a chain may set: the timeline expression.
FILTER_CONTEXT_OPTIONS = frozenset({"enable"})

#: Encoder options: AVCodecContext's, then private ones of the encoders PyAV's wheels bundle. A name
#: is allowed for every encoder that has it; tests check each against every encoder's table.
ENCODER_OPTIONS = frozenset({
    # AVCodecContext (every encoder)
    "b", "ab", "bt", "flags", "flags2", "g", "ar", "cutoff", "frame_size", "qcomp", "qblur", "qmin", "qmax",
    "qdiff", "bf", "b_qfactor", "b_qoffset", "i_qfactor", "i_qoffset", "maxrate", "minrate", "bufsize",
    "rc_init_occupancy", "rc_max_vbv_use", "rc_min_vbv_use", "aspect", "sar", "me_range", "subq",
    "global_quality", "mbd", "threads", "thread_type", "profile", "level", "keyint_min", "refs", "trellis",
    "compression_level", "slices", "color_primaries", "color_trc", "colorspace", "color_range",
    "chroma_sample_location", "field_order", "strict", "dia_size", "cmp", "subcmp", "mbcmp", "sc_threshold",
    # libx264
    "preset", "tune", "wpredp", "a53cc", "crf", "crf_max", "qp", "aq-mode", "aq-strength", "psy", "psy-rd",
    "rc-lookahead", "weightb", "weightp", "intra-refresh", "bluray-compat", "b-bias", "b-pyramid",
    "mixed-refs", "8x8dct", "fast-pskip", "aud", "mbtree", "deblock", "cplxblur", "partitions", "direct-pred",
    "slice-max-size", "nal-hrd", "avcintra-class", "motion-est", "forced-idr", "coder", "b_strategy",
    "chromaoffset", "noise_reduction", "udu_sei", "x264-params",
    # libx265, libsvtav1
    "x265-params", "svtav1-params",
    # libvpx, libvpx-vp9
    "lag-in-frames", "arnr-maxframes", "arnr-strength", "arnr-type", "deadline", "error-resilient",
    "max-intra-rate", "static-thresh", "drop-threshold", "noise-sensitivity", "undershoot-pct",
    "overshoot-pct", "auto-alt-ref", "cpu-used", "lossless", "tile-columns", "tile-rows", "frame-parallel",
    "row-mt", "tune-content", "corpus-complexity", "enable-tpl", "min-gf-interval", "speed", "quality",
    "sharpness", "screen-content-mode", "vp8flags",
    # libopus, libmp3lame, aac, flac
    "application", "frame_duration", "packet_loss", "fec", "vbr", "mapping_family", "apply_phase_inv",
    "reservoir", "joint_stereo", "abr", "copyright", "original",
    "aac_coder", "aac_ms", "aac_is", "aac_pns", "aac_tns", "aac_pce",
    "lpc_coeff_precision", "lpc_type", "lpc_passes", "min_partition_order", "max_partition_order",
    "prediction_order_method", "ch_mode", "exact_rice_parameters", "multi_dim_quant", "min_prediction_order",
    "max_prediction_order",
    # NVENC, png, webp
    "rc", "cq", "zerolatency", "spatial-aq", "temporal-aq", "strict_gop", "dpi", "dpm", "pred",
})

#: Flags options whose values are checked bit by bit: the named values allowed. AVCodecContext's
#: ``pass1``/``pass2`` make libx264 and others write statistics files; ``fflags`` and ``movflags`` keep
#: to what a muxer does with its own output.
FLAG_VALUES: dict[str, frozenset[str]] = {
    "flags": frozenset({"mv4", "qpel", "loop", "qscale", "gray", "psnr", "ildct", "low_delay", "global_header",
                        "bitexact", "aic", "ilme", "cgop", "output_corrupt", "frame_duration", "copy_opaque"}),
    "flags2": frozenset({"fast", "local_header"}),
    "fflags": frozenset({"flush_packets", "bitexact", "autobsf"}),
    "movflags": frozenset({"cmaf", "dash", "default_base_moof", "delay_moov", "disable_chpl", "empty_moov",
                           "faststart", "frag_discont", "frag_every_frame", "frag_keyframe", "global_sidx",
                           "negative_cts_offsets", "omit_tfhd_offset", "prefer_icc", "separate_moof",
                           "skip_sidx", "skip_trailer", "use_metadata_tags", "write_colr", "write_gama",
                           "hybrid_fragmented"}),
}

#: Encoder options that make an encoder hold frames (or threads holding frames): the most allowed.
#: A 64x48 input can be scaled to 8K; 250 frames of lookahead at 8K is gigabytes. The caps are the
#: encoders' own slowest presets (x264/x265 placebo: 60 frames of lookahead, 16 references).
CAPS: dict[str, int] = {
    "rc-lookahead": 60, "lag-in-frames": 25, "arnr-maxframes": 15, "refs": 16, "bf": 16, "threads": 64,
    "slices": 256,
}


@dataclass(frozen=True)
class Params:
    """The entries allowed in an encoder library's own ``key=value:...`` parameter option.

    ``x26x_names``: x264 and x265 read ``_`` as ``-`` and ``no-key``/``nokey`` as key's negation (x265
    also drops a leading ``--``); other libraries compare names exactly.
    """

    keys: frozenset[str]
    caps: dict[str, int] = field(default_factory=dict)
    x26x_names: bool = False

    def effective(self, key: str) -> tuple[str, bool]:
        """The name the library acts on, and whether it is a negation."""
        if not self.x26x_names:
            return key, False
        name = key[2:] if key.startswith("--") else key
        name = name.replace("_", "-")
        if name.startswith("no-"):
            return name[3:], True
        if name.startswith("no"):
            return name[2:], True
        return name, False


_X264_KEYS = frozenset({
    "keyint", "min-keyint", "scenecut", "bframes", "b-adapt", "b-bias", "b-pyramid", "open-gop", "cabac", "ref",
    "deblock", "interlaced", "tff", "bff", "constrained-intra", "fake-interlaced", "slices", "slice-max-size",
    "slice-max-mbs", "slices-max", "qp", "qpmin", "qpmax", "qpstep", "crf", "crf-max", "bitrate", "vbv-maxrate",
    "vbv-bufsize", "vbv-init", "ipratio", "pbratio", "chroma-qp-offset", "aq-mode", "aq-strength", "rc-lookahead",
    "mbtree", "qcomp", "cplxblur", "qblur", "partitions", "analyse", "direct", "weightb", "weightp", "me",
    "merange", "mvrange", "subme", "psy-rd", "psy", "mixed-refs", "chroma-me", "8x8dct", "trellis", "fast-pskip",
    "dct-decimate", "nr", "deadzone-inter", "deadzone-intra", "threads", "lookahead-threads", "sliced-threads",
    "sync-lookahead", "intra-refresh", "force-cfr", "aud", "nal-hrd", "filler", "pic-struct", "sar", "overscan",
    "videoformat", "range", "colorprim", "transfer", "colormatrix", "chromaloc", "level", "bluray-compat",
    "avcintra-class", "stitchable", "annexb", "repeat-headers", "mastering-display", "cll",
    "alternative-transfer",
})
_X265_KEYS = frozenset({
    "keyint", "min-keyint", "scenecut", "bframes", "b-adapt", "bframe-bias", "b-pyramid", "open-gop", "ref",
    "rc-lookahead", "lookahead-slices", "lookahead-threads", "frame-threads", "wpp", "pmode", "pme", "crf", "qp",
    "bitrate", "vbv-maxrate", "vbv-bufsize", "vbv-init", "aq-mode", "aq-strength", "cutree", "qcomp", "ipratio",
    "pbratio", "cbqpoffs", "crqpoffs", "psy-rd", "psy-rdoq", "rd", "rdoq-level", "me", "subme", "merange",
    "max-merge", "early-skip", "rect", "amp", "ctu", "min-cu-size", "max-tu-size", "tu-intra-depth",
    "tu-inter-depth", "limit-refs", "limit-modes", "sao", "deblock", "strong-intra-smoothing",
    "constrained-intra", "weightp", "weightb", "repeat-headers", "annexb", "aud", "hrd", "info", "hash",
    "colorprim", "transfer", "colormatrix", "range", "sar", "chromaloc", "level-idc", "high-tier", "hdr-opt",
    "hdr10", "hdr10-opt", "master-display", "max-cll", "slices", "radl", "intra-refresh", "fades",
    "temporal-layers",
})
_SVTAV1_KEYS = frozenset({
    "keyint", "lookahead", "tune", "enable-overlays", "scd", "irefresh-type", "crf", "qp", "rc", "tbr", "mbr",
    "buf-sz", "buf-initial-sz", "buf-optimal-sz", "hierarchical-levels", "pred-struct", "film-grain",
    "film-grain-denoise", "enable-tf", "tile-rows", "tile-columns", "fast-decode", "enable-qm", "qm-min",
    "qm-max", "aq-mode", "enable-variance-boost", "lp", "preset", "color-primaries", "transfer-characteristics",
    "matrix-coefficients", "color-range", "chroma-sample-position", "mastering-display", "content-light",
    "sharpness",
})

#: Library parameter options and what each allows. ``pass``, ``stats``, x265's ``analysis-save``,
#: ``csv``, ``recon``, ``dump-yuv``, ``qpfile``, ``zonefile``, ``cqmfile``, SVT's ``fgs-table``...
#: name files, and are simply not here.
PARAMS: dict[str, Params] = {
    "x264-params": Params(_X264_KEYS, {"rc-lookahead": 60, "sync-lookahead": 60, "ref": 16, "bframes": 16,
                                       "threads": 64, "lookahead-threads": 16}, x26x_names=True),
    "x265-params": Params(_X265_KEYS, {"rc-lookahead": 60, "lookahead-slices": 16, "lookahead-threads": 16,
                                       "frame-threads": 16, "ref": 16, "bframes": 16}, x26x_names=True),
    "svtav1-params": Params(_SVTAV1_KEYS, {"lookahead": 120, "lp": 64}),
}

#: Muxer options: AVFormatContext's, then private ones of the muxers framecast writes.
MUXER_OPTIONS = frozenset({
    # AVFormatContext (every muxer)
    "fflags", "packetsize", "max_delay", "flush_packets", "metadata_header_padding", "output_ts_offset",
    "max_interleave_delta", "avoid_negative_ts", "strict", "f_strict",
    # mov, mp4, ismv, ...
    "brand", "empty_hdlr_name", "frag_duration", "frag_interleave", "frag_size", "fragment_index", "movflags",
    "min_frag_duration", "movie_timescale", "use_editlist", "use_stream_ids_as_track_ids",
    "video_track_timescale", "write_btrt", "write_prft", "write_tmcd", "skip_iods",
    # matroska, webm
    "reserve_index_space", "cues_to_front", "cluster_size_limit", "cluster_time_limit", "live", "write_crc32",
    "default_mode",
    # flv
    "flvflags",
    # mpegts
    "mpegts_transport_stream_id", "mpegts_original_network_id", "mpegts_service_id", "mpegts_service_type",
    "mpegts_pmt_start_pid", "mpegts_start_pid", "mpegts_m2ts_mode", "muxrate", "pes_payload_size",
    "mpegts_flags", "mpegts_copyts", "tables_version", "omit_video_pes_length", "pcr_period", "pat_period",
    "sdt_period", "nit_period",
    # mp3, adts, wav, ogg/opus, flac, nut
    "id3v2_version", "write_id3v1", "write_xing", "write_id3v2", "write_apetag", "write_mpeg2", "write_bext",
    "write_peak", "rf64", "peak_block_size", "peak_format", "peak_ppv", "serial_offset", "page_duration",
    "write_header", "syncpoints", "write_index",
})
# fmt: on

#: Words in an option's name or help text that mean it names a file, URL, device or command. Used to
#: explain refusals and, in the tests, to check that nothing allowed is one of those.
FILE_WORDS = re.compile(
    r"(?<!pro)file|path|url\b|uri\b|dump|stats|passlog|plot|script|command|\bcmd|protocol|whitelist|blacklist|"
    r"http|listen|socket|device|librar|fifo|segment|playlist|analysis[-_ ]?(save|load|reuse)|csv|recon\b|"
    r"key_info|master_pl|init_seg|media_seg|attach|director",
    re.IGNORECASE,
)

#: A value that points somewhere: an absolute, home or parent path, or a URL or protocol prefix.
PATH_OR_URL = re.compile(r"(^\s*[/~\\]|\.\.|[a-z][a-z0-9+.-]*:(?!\d))", re.IGNORECASE)

_MAX_OPTIONS = 64
_MAX_VALUE = 1024
_MAX_FILTERS = 32


def _split(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip() for v in values if v.strip())


def _names(items: Iterable[str], limit: int = 60) -> str:
    items = sorted(items)
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def allowed_filters(settings: Settings, media: Media) -> frozenset[str]:
    """The filters a ``media`` stream may use on this server."""
    return (VIDEO_FILTERS if media == "video" else AUDIO_FILTERS) | _split(settings.extra_filters)


def check_filters(settings: Settings, media: Media, desc: str, field_name: str) -> list[FilterStep]:
    """Parse ``desc`` as FFmpeg would and allow it only if every filter and option is allowed.

    Returns the chain with every option named (what the encoder process builds).
    """
    if "\x00" in desc:
        raise InvalidConfig("contains a NUL character, where FFmpeg would cut the chain short", field_name)
    try:
        raw = split_graph(desc)
    except FilterSyntaxError as exc:
        raise InvalidConfig(str(exc), field_name) from None
    if len(raw) > _MAX_FILTERS:
        raise InvalidConfig(f"at most {_MAX_FILTERS} filters in a chain, got {len(raw)}", field_name)
    allowed = allowed_filters(settings, media)
    steps = []
    for item in raw:
        if item.name not in av.filter.filters_available:
            raise InvalidConfig(f"unknown filter {item.name!r}", field_name)
        if item.name not in allowed:
            raise InvalidConfig(
                f"filter {item.name!r} is not allowed; allowed {media} filters: {_names(allowed, 100)} "
                "(FRAMECAST_EXTRA_FILTERS extends the list)",
                field_name,
            )
        with avoptions.Filter(item.name) as ff:
            try:
                step = split_options(item.args, [o.name for o in ff.shorthand()], item.name)
            except FilterSyntaxError as exc:
                raise InvalidConfig(str(exc), field_name) from None
            for key, value in step.options:
                _check_filter_option(ff, key, value, field_name)
        steps.append(step)
    return steps


def _check_filter_option(ff: avoptions.Filter, key: str, value: str, field_name: str) -> None:
    name = ff.name
    if key.startswith("/"):
        raise InvalidConfig(f"{name}: '/{key[1:]}=' loads an option's value from a file; not allowed", field_name)
    if len(value) > _MAX_VALUE:
        raise InvalidConfig(f"{name}: option {key!r} is too long (at most {_MAX_VALUE} characters)", field_name)
    hits = {hit.scope: hit for hit in ff.find(key)}
    # AVFilterContext options are applied with AV_OPT_SEARCH_CHILDREN: the filter's own table first.
    hit = hits.get("private") or hits.get("generic")
    if hit is None:
        options = [o.name for o in ff.options("private") if not o.is_const]
        raise InvalidConfig(f"filter {name!r} has no option {key!r}; it takes: {_names(options)}", field_name)
    if hit.scope == "generic" and key not in FILTER_CONTEXT_OPTIONS:
        raise InvalidConfig(
            f"{name}: option {key!r} is not allowed in a filter chain; of the filter "
            f"context's options only {_names(FILTER_CONTEXT_OPTIONS)}",
            field_name,
        )
    if hit.option.type in (OptionType.STRING, OptionType.BINARY, OptionType.DICT) and PATH_OR_URL.search(value):
        raise InvalidConfig(
            f"{name}: value {value!r} of option {key!r} looks like a path or URL; not allowed", field_name
        )
    error = ff.set(hit.scope, key, value)
    if error is not None:
        raise InvalidConfig(f"{name}: option {key!r} cannot be {value!r} ({error}); {_expected(ff, hit)}", field_name)
    unnamed = _unnamed_value(ff, hit, key)
    if unnamed is not None:
        raise InvalidConfig(
            f"{name}: {unnamed} is not a named value of option {key!r}; {_expected(ff, hit)}", field_name
        )


def _unnamed_value(obj: FFObject, hit: Found, key: str) -> int | None:
    """The number an enumeration option was set to, if it is none of the option's named values.

    FFmpeg's ranges for enumerations have holes (scale's ``out_primaries`` takes -1 to 22, but 13
    to 21 name nothing and crash FFmpeg 8.0's swscale: tests/test_filter_fuzz.py found it), so an
    option with named values and a small range takes only those, or its default.
    """
    option = hit.option
    if option.type not in (OptionType.INT, OptionType.INT64, OptionType.UINT) or not option.unit:
        return None
    if option.max - option.min >= 256:
        return None  # a number with a few special values (threads=auto), not an enumeration
    named = {c.value for c in obj.constants(hit.scope, option.unit)}
    if not named:
        return None
    value = obj.get_int(hit.scope, key)
    return None if value in named or value == option.value else value


def _expected(obj: FFObject, hit: Found) -> str:
    """What a value of this option looks like, from its table row."""
    option = hit.option
    if option.unit:
        consts = [c.name for c in obj.constants(hit.scope, option.unit)]
        if consts:
            joiner = "'+'-separated" if option.type == OptionType.FLAGS else "one of"
            return f"expected {joiner}: {_names(consts)}"
    kind = _KIND_NAMES.get(option.type, option.type.name.lower().replace("_", " "))
    if option.type in _NUMBERS and option.min < option.max:
        return f"expected {kind} from {option.min:g} to {option.max:g}"
    return f"expected {kind}"


_NUMBERS = {
    OptionType.INT,
    OptionType.INT64,
    OptionType.UINT,
    OptionType.UINT64,
    OptionType.DOUBLE,
    OptionType.FLOAT,
    OptionType.BOOL,
}
_KIND_NAMES = {
    OptionType.INT: "an integer",
    OptionType.INT64: "an integer",
    OptionType.UINT: "an integer",
    OptionType.UINT64: "an integer",
    OptionType.DOUBLE: "a number",
    OptionType.FLOAT: "a number",
    OptionType.BOOL: "a boolean (0/1, true/false)",
    OptionType.STRING: "a string",
    OptionType.RATIONAL: "a ratio (a/b)",
    OptionType.DURATION: "a duration ([-][HH:]MM:SS[.m...])",
    OptionType.IMAGE_SIZE: "a size (WxH)",
    OptionType.VIDEO_RATE: "a frame rate",
    OptionType.COLOR: "a color",
    OptionType.PIXEL_FMT: "a pixel format",
    OptionType.SAMPLE_FMT: "a sample format",
    OptionType.CHLAYOUT: "a channel layout",
}


@dataclass(frozen=True)
class _Rules:
    """One kind of options (encoder or muxer): what is allowed, and the setting that extends it."""

    kind: str
    names: frozenset[str]
    extra_setting: str
    dotted: frozenset[tuple[str, str]] = frozenset()  # operator-added "flags.pass1", "x264-params.zones"

    @classmethod
    def make(cls, kind: str, builtin: frozenset[str], extra: Iterable[str], setting: str) -> _Rules:
        extra = _split(extra)
        dotted = frozenset(tuple(e.split(".", 1)) for e in extra if "." in e)
        return cls(kind, builtin | {e for e in extra if "." not in e}, setting, dotted)  # type: ignore[arg-type]

    def extra_values(self, option: str) -> set[str]:
        """Flag values or library parameter keys the operator added to ``option``."""
        return {value for name, value in self.dotted if name == option}


def check_encoder_options(settings: Settings, encoder: str, options: dict[str, str], field_name: str) -> None:
    """Encoder options: each allowed for ``encoder`` as FFmpeg resolves it, and its value within bounds."""
    rules = _Rules.make("encoder", ENCODER_OPTIONS, settings.extra_encoder_options, "FRAMECAST_EXTRA_ENCODER_OPTIONS")
    with avoptions.Encoder(encoder) as obj:
        _check_options(obj, rules, options, field_name)


def check_muxer_options(settings: Settings, muxer: str, options: dict[str, str], field_name: str) -> None:
    """Muxer (format) options, likewise for ``muxer``."""
    rules = _Rules.make("muxer", MUXER_OPTIONS, settings.extra_muxer_options, "FRAMECAST_EXTRA_MUXER_OPTIONS")
    with avoptions.Muxer(muxer) as obj:
        _check_options(obj, rules, options, field_name)


def _check_options(obj: FFObject, rules: _Rules, options: dict[str, str], field_name: str) -> None:
    if len(options) > _MAX_OPTIONS:
        raise InvalidConfig(f"at most {_MAX_OPTIONS} options, got {len(options)}", field_name)
    for key, value in options.items():
        where = f"{field_name}.{key}"
        if len(value) > _MAX_VALUE or len(key) > 64:
            raise InvalidConfig(f"option too long (at most 64 characters for a name, {_MAX_VALUE} for a value)", where)
        if "\x00" in key + value:
            raise InvalidConfig("contains a NUL character, where FFmpeg would cut it short", where)
        hits = obj.find(key)
        if not hits:
            # FFmpeg does not know this name for this encoder or muxer: it sets nothing, and the
            # name comes back as "not used". Unless it reads like a file option FFmpeg may yet learn.
            if FILE_WORDS.search(key):
                raise InvalidConfig(f"option {key!r} names files, URLs or commands and is not allowed", where)
            if PATH_OR_URL.search(value):
                raise InvalidConfig(f"value {value!r} looks like a path or URL; not allowed in options", where)
            continue
        for hit in hits:
            _check_name(obj, rules, key, hit, where)
        if PATH_OR_URL.search(value) and any(h.option.type != OptionType.DICT for h in hits):
            raise InvalidConfig(f"value {value!r} looks like a path or URL; not allowed in options", where)
        errors = []
        for hit in hits:
            before = obj.get_int(hit.scope, key) if hit.option.type == OptionType.FLAGS else 0
            error = obj.set(hit.scope, key, value)
            if error is not None:
                errors.append((hit, error))
                continue
            _check_value(obj, rules, key, hit, before, where)
        if len(errors) == len(hits):
            hit, error = errors[0]
            raise InvalidConfig(
                f"{obj.kind} {obj.name!r} cannot take {value!r} for {key!r} ({error}); {_expected(obj, hit)}", where
            )


def _check_name(obj: FFObject, rules: _Rules, key: str, hit: Found, where: str) -> None:
    aliases = obj.aliases(hit)
    if set(aliases) & rules.names:
        return
    words = " ".join([*aliases, hit.option.help])
    if FILE_WORDS.search(words):
        raise InvalidConfig(
            f"option {key!r} ({hit.option.help or 'no description'}) names files, URLs or commands and is not allowed",
            where,
        )
    known = sorted({o.name for _, o in avoptions.iter_tables(obj) if not o.is_const} & rules.names)
    raise InvalidConfig(
        f"option {key!r} of {obj.kind} {obj.name!r} is not allowed; allowed: {_names(known)} "
        f"({rules.extra_setting} extends the list)",
        where,
    )


def _check_value(obj: FFObject, rules: _Rules, key: str, hit: Found, before: int, where: str) -> None:
    """The value as FFmpeg parsed it: named values of enumerations, allowed flag bits, caps, library
    parameters."""
    aliases = obj.aliases(hit)
    option = hit.option
    unnamed = _unnamed_value(obj, hit, key)
    if unnamed is not None:
        raise InvalidConfig(f"{unnamed} is not a named value of {key!r}; {_expected(obj, hit)}", where)
    if option.type == OptionType.FLAGS:
        flags_option = next((a for a in aliases if a in FLAG_VALUES), None)
        if flags_option is not None:
            allowed_names = FLAG_VALUES[flags_option] | rules.extra_values(flags_option)
            consts = obj.constants(hit.scope, option.unit or "")
            mask = before
            for c in consts:
                if c.name in allowed_names:
                    mask |= c.value
            value = obj.get_int(hit.scope, key)
            bad = value & ~mask
            if bad:
                named = sorted({c.name for c in consts if c.value & bad}) or [hex(bad)]
                plural = len(named) > 1
                raise InvalidConfig(
                    f"{key} value{'s' if plural else ''} {', '.join(named)} "
                    f"{'are' if plural else 'is'} not allowed; allowed: {_names(allowed_names)} "
                    f"({rules.extra_setting} extends the list with '{flags_option}.VALUE')",
                    where,
                )
    cap = next((CAPS[a] for a in aliases if a in CAPS), None)
    if cap is not None:
        number = (
            obj.get_int(hit.scope, key)
            if option.type in (OptionType.INT, OptionType.INT64, OptionType.UINT)
            else obj.get_double(hit.scope, key)
        )
        if number > cap:
            raise InvalidConfig(
                f"{key} {number:g} is above this server's cap of {cap} (it makes the encoder "
                f"hold that many frames, or threads holding frames, in memory)",
                where,
            )
    if option.type == OptionType.DICT:
        params = next((PARAMS[a] for a in aliases if a in PARAMS), None)
        if params is None:
            raise InvalidConfig(f"option {key!r} takes library parameters this server has no rules for", where)
        canonical = next(a for a in aliases if a in PARAMS)
        for name, entry in obj.get_dict(hit.scope, key):
            _check_param(canonical, params, rules, name, entry, where)


_DECIMAL = re.compile(r"\s*\+?\d{1,9}\s*")


def _check_param(option: str, params: Params, rules: _Rules, name: str, value: str, where: str) -> None:
    entry = f"{name}={value}"
    effective, negated = params.effective(name)
    allowed = params.keys | rules.extra_values(option)
    if effective not in allowed:
        if FILE_WORDS.search(effective) or effective in ("pass", "stats", "qpfile", "zonefile", "cqmfile"):
            raise InvalidConfig(f"{option} entry {entry!r} names files, URLs or commands and is not allowed", where)
        raise InvalidConfig(
            f"{option} key {name!r} is not allowed; allowed: {_names(params.keys, 200)} "
            f"({rules.extra_setting} extends the list with '{option}.KEY')",
            where,
        )
    if PATH_OR_URL.search(value):
        raise InvalidConfig(f"{option} entry {entry!r} looks like a path or URL; not allowed", where)
    cap = params.caps.get(effective)
    if cap is not None and not negated:
        if not _DECIMAL.fullmatch(value):
            raise InvalidConfig(f"{option} {name} must be a whole number up to {cap}, got {value!r}", where)
        if int(value) > cap:
            raise InvalidConfig(
                f"{option} {name}={int(value)} is above this server's cap of {cap} (it makes the "
                f"encoder hold that many frames, or threads holding frames, in memory)",
                where,
            )
