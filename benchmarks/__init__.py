"""framecast's benchmark suite (issue 6): ``python -m benchmarks [--quick]``.

Every scenario starts its own ``framecast serve`` on a free loopback port, measures framecast and
whatever it is compared with side by side in the same run, and reports numbers, ratios and the
targets they are held to. See BENCHMARKS.md for the method of each scenario and the latest results.

Modules:
    cli         the command line: runs scenarios, writes results, prints the table, draws the plot
    settings    sizes and durations of the full and the quick run
    server      a framecast server in a subprocess, and the memory of its process tree
    media       moving test patterns and tones, precomputed before anything is timed
    measure     clocks, percentiles, CPU accounting, ACK timing hooked into the SDK writer
    baselines   what framecast is compared with: PyAV in-process, an ffmpeg pipe
    udp         a UDP receiver standing in for a live viewer
    report      results, targets, the text and markdown tables
    plot        the PNG
    profile     py-spy profiles of the server, its encoders and the client (for BENCHMARKS.md)
    scenarios/  one module per scenario
"""
