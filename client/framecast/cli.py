"""The ``framecast`` command: ``framecast serve`` runs the server (needs ``framecast[server]``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="framecast", description="Stream tensors into FFmpeg encoders.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the framecast server")
    serve.add_argument("--host", default=None, help="bind address (FRAMECAST_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (FRAMECAST_PORT, default 8000)")
    serve.add_argument(
        "--output-dir", type=Path, default=None, help="server-side outputs (FRAMECAST_OUTPUT_DIR, default ./output)"
    )

    caps = sub.add_parser("capabilities", help="print what the server's FFmpeg can do")
    caps.add_argument("--server", default=None, help="server URL (FRAMECAST_SERVER, default http://127.0.0.1:8000)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            from framecast_server.cli import serve as run
        except ImportError as exc:
            print(f"framecast serve needs the server extra: pip install 'framecast[server]' ({exc})", file=sys.stderr)
            return 2
        run(host=args.host, port=args.port, output_dir=args.output_dir)
        return 0
    if args.command == "capabilities":
        from .functional import capabilities

        json.dump(capabilities(args.server), sys.stdout, indent=2)
        print()
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
