"""``python -m crmify.sandbox [--port 8765] [--api-key K] ...``: run a sandbox in the foreground.

The demo and users without Django at hand start it this way; options are in ``cli.py``.
"""

from __future__ import annotations

import argparse
import signal
import sys

from .cli import add_arguments, build_server, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crmify.sandbox",
        description="An offline Insightly API v3.1 (or, with --crm hubspot, HubSpot CRM) with fault injection.",
    )
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        server = build_server(options)
    except (OSError, ValueError) as error:  # port taken, bad fault values, bad state file
        parser.error(str(error))
    # Started in the background by a script (nohup, `cmd &`), SIGINT comes in ignored, and a parent that
    # blocked it passes the block on: either way Ctrl-C or a supervisor's SIGINT would not stop the
    # sandbox. Take the default handler back and unblock it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "pthread_sigmask"):  # not on Windows
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    run(server, lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
