"""A relay process: connects one network destination and muxes the packets its encoder sends.

Started by ``relay.Relay`` as ``python -m framecast_server.encoder.relay_main``, it reads records
from stdin and answers on stdout (``messages.py``: ``ToRelay``, ``FromRelay``). It inherits the
encoder process's limits, working directory and stderr (the server's log). It lives as long as
its destination: when the destination drops it says so and exits, and the encoder starts another
for the next attempt. When its encoder goes away (stdin closes), it leaves at once.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterator

import av.logging

from framecast_server import masking
from framecast_server.encoder.errors import SetupError, describe_error
from framecast_server.encoder.output import Output
from framecast_server.encoder.relay import packet_from_record
from framecast_server.messages import (
    FromRelay,
    RelayClose,
    RelayClosed,
    RelayFrames,
    RelayLost,
    RelayOpen,
    RelayPacket,
    RelayProgress,
    RelayReady,
    RelayTarget,
    ToRelay,
    encode_relay,
)

#: Seconds between two ``RelayProgress`` messages while packets flow.
PROGRESS_EVERY = 0.1


def main() -> int:
    records = _records(sys.stdin.fileno())
    first = next(records, None)
    if not isinstance(first, RelayOpen):
        return 2  # not started by an encoder
    target = first.target
    av.logging.set_level(av.logging.ERROR)
    secrets = [target.options["authorization"]] if "authorization" in target.options else []
    masking.hide_in_process([target.given_url], secrets)
    with av.open(io.BytesIO(first.header), "r", format="nut") as header:
        output = Output(target, list(header.streams), first.metadata)
    try:
        output.start()
    except SetupError as exc:
        _say(RelayLost(str(exc), 0))
        return 1
    _say(RelayReady(output.warnings))
    return _relay(records, output)


def _relay(records: Iterator[ToRelay], output: Output[RelayTarget]) -> int:
    """Mux every packet until told to close; say how far it got now and then."""
    muxed = 0
    said_at = time.monotonic()
    for record in records:
        match record:
            case RelayPacket():
                try:
                    output.mux(packet_from_record(record), record.stream, copy=False)
                except Exception as exc:  # the destination dropped: EPIPE, ECONNRESET, EIO, ...
                    _say(RelayLost(describe_error(exc), muxed))
                    output.abort()
                    return 1
                muxed += 1
                if time.monotonic() - said_at >= PROGRESS_EVERY:
                    _say(RelayProgress(muxed))
                    said_at = time.monotonic()
            case RelayClose():
                try:
                    output.close()
                except Exception as exc:
                    _say(RelayLost(f"writing the trailer failed: {describe_error(exc)}", muxed))
                    return 1
                _say(RelayClosed(muxed))
                return 0
    output.abort()  # the encoder is gone
    return 0


def _records(fd: int) -> Iterator[ToRelay]:
    frames = RelayFrames()
    while data := os.read(fd, 1 << 20):
        for record in frames.feed(data):
            if not isinstance(record, RelayOpen | RelayPacket | RelayClose):
                raise TypeError(f"not a message for a relay: {record!r}")
            yield record


def _say(message: FromRelay) -> None:
    data = encode_relay(message)
    while data:
        written = os.write(sys.stdout.fileno(), data)
        data = data[written:]


if __name__ == "__main__":
    sys.exit(main())
