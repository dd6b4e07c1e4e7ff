"""The encoder process: everything here runs inside it, never on the server's event loop.

``main`` is the entry point (``worker_main``, ``spare_main``), ``pipe`` its end of the pipe,
``loops`` the direct and paced loops, ``writer`` the encoders (``SessionWriter``), ``output`` one
destination's container (``Output``), ``live`` the connects and reconnects of network outputs,
``relay`` and ``relay_main`` the process each network output is muxed in (the encoder's end and
the process), ``confined`` the files an HLS or DASH muxer opens, ``rotation`` a recording cut
into files, ``pacing`` real-time release, ``preview`` the dashboard's frames, ``malloc`` the
allocator settings. What crosses the pipes is in ``framecast_server.messages``.
"""
