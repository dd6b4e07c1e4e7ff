"""The encoder process: everything here runs inside it, never on the server's event loop.

``main`` is the entry point (``worker_main``, ``spare_main``), ``pipe`` its end of the pipe,
``loops`` the direct and paced loops, ``output`` the PyAV output (``OutputWriter``), ``live`` the
reconnects of network outputs, ``pacing`` real-time release, ``preview`` the dashboard's frames,
``malloc`` the allocator settings. What crosses the pipe is in ``framecast_server.messages``.
"""
