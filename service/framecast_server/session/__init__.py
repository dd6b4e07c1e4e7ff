"""The event loop's side of a session: its state machine, its client's outbox, its encoder's handle.

``manager.SessionManager`` owns every session of a server; ``session.Session`` is one of them;
``encoder_process`` is the only module on the server's side that imports ``encoder/``: it names
the entry points of the processes it starts (``tests/test_layout.py``).
"""
