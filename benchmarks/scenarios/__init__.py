"""One module per scenario; each has ``NAME``, ``TITLE`` and ``run(settings, workdir) -> ScenarioResult``."""

from . import compression, concurrency, drift, e2e, fanout, ladder, latency, memory, shaped, transport

#: In the order they run (the long memory soak last but one, drift last).
ALL = [e2e, transport, latency, concurrency, fanout, ladder, shaped, compression, memory, drift]
