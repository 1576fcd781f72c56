"""The ``bridge`` command: one parser, each sub-command registered by its own package.

=========== ==============================================
command     registered by
=========== ==============================================
serve, dial :mod:`bridge.serving`
call        :mod:`bridge.client`
twilio      :mod:`bridge.mediastreams.commands`
bench       :mod:`bridge.benchmarks.commands`
calls       :mod:`bridge.records.commands`
models      :mod:`bridge.models.commands`
campaign    :mod:`bridge.outbound.commands`
health      :mod:`bridge.health`
=========== ==============================================

Registering a command imports no model library: they load when a command runs, after
:func:`bridge.offline.lock_down`.
"""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The ``bridge`` parser with every sub-command; each sets ``func`` to its runner."""
    from . import client, health, serving
    from .benchmarks import commands as bench
    from .commands import campaign, models
    from .mediastreams import commands as twilio
    from .records import commands as records

    parser = argparse.ArgumentParser(prog="bridge", description="Self-hosted voice-AI endpoint for phone calls.")
    sub = parser.add_subparsers(dest="command", required=True)
    serving.add_parsers(sub)
    twilio.add_parser(sub)
    bench.add_parser(sub)
    records.add_parser(sub)
    health.add_parser(sub)
    models.add_parser(sub)
    client.add_parser(sub)
    campaign.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bridge`` console script.

    A bad setting (file, environment or option) prints one line naming it on
    stderr and exits with status 2, like a bad option does.
    """
    from .offline import lock_down

    args = build_parser().parse_args(argv)  # argparse loads no model library
    lock_down(hub=args.command == "models" and args.action == "pull")  # before any model library is imported
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"bridge {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
