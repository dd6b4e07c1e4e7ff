"""How the kernel schedules encoder processes: as batch work, so the server is never queued behind them.

Each chunk crosses the server on its way to its encoder and each ACK on its way back: the server
relays every session's messages, so whatever delays it delays them all. With Linux's default
policy a process woken by a write preempts the writer: the server writes a chunk's descriptor, the
encoder it wakes takes the CPU, and the server finishes that write and relays the next session's
chunk only after a frame's encoding. With dozens of sessions the server spends its time queued
behind encoders, and every session's frames wait in turn.

``SCHED_BATCH`` (sched(7)) marks a process as throughput work: same CPU share as any other
(weights and nice values are unchanged), but its wake-ups never preempt a running process; it
takes a CPU that is idle, or gets one at the next scheduler tick. Encoders are exactly that: a
frame has its frame interval to be encoded, not microseconds. So the server, the client and
anything else interactive on the machine keep the CPU when they have it.

Side by side with the default policy, ACK latency under load fell by about a third, with the same
CPU a frame and no slower file encoding: BENCHMARKS.md, "Measurements behind design choices".

Any process may move itself to SCHED_BATCH without privileges. Where the call is not available
(not Linux) or refused (a seccomp profile), the encoder keeps the default policy and says so.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

log = logging.getLogger(__name__)

Policy = Literal["batch", "normal"]


def apply(policy: Policy) -> None:
    """Put the calling process's thread, and the threads it starts from now on, under ``policy``."""
    if policy == "normal":
        return
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None:
        log.info("encoder scheduling %r is not available on this platform; keeping the default", policy)
        return
    try:
        setter(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as exc:
        log.warning("cannot run the encoder as batch work (%s); keeping the default scheduling", exc)
