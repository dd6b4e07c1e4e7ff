"""What clients meet: the FastAPI app, its REST routes, the chunk websocket, the dashboard, keys.

Runs on the event loop. Sessions are reached through ``session.manager.SessionManager``; nothing
here imports the encoder's side (``tests/test_layout.py``).
"""
