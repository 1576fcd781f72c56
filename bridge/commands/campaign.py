"""``bridge campaign run FILE.csv --name NAME`` and ``bridge campaign status NAME [--json]``.

``run`` starts the same server as ``bridge dial`` (the models, SIP, RTP, records,
``/metrics``) and dials the campaign's callees (:mod:`bridge.outbound.campaign`);
SIGTERM or SIGINT stop new dials, let calls in progress finish and save the state. It
needs ``storage.url``: the campaign's state lives in the records database.
``status`` reads that database only (no models).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``campaign`` sub-command on the ``bridge`` parser."""
    from ..serving import server_options

    campaign = sub.add_parser(
        "campaign",
        help="outbound campaigns: 'run FILE.csv --name NAME' dials a CSV of callees (paced, windows, "
        "retries, do-not-call); 'status NAME' shows progress and outcomes",
    )
    campaign.add_argument("action", choices=["run", "status"])
    campaign.add_argument(
        "target",
        help="run: the CSV file (a 'number' column in E.164, other columns are variables); status: the campaign's name",
    )
    campaign.add_argument("--name", help="run: the campaign's name (a run after a crash or a stop resumes it)")
    campaign.add_argument("--json", action="store_true", help="status: JSON")
    campaign.add_argument("--cps", type=float, help="run: calls per second (default outbound.campaign.cps)")
    campaign.add_argument(
        "--max-concurrent", type=int, help="run: calls at once (default outbound.campaign.max_concurrent)"
    )
    campaign.add_argument(
        "--amd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run: answering-machine detection (default outbound.campaign.amd)",
    )
    campaign.add_argument("--dnc", metavar="FILE", help="run: a do-not-call file (default outbound.campaign.dnc_file)")
    campaign.add_argument("--termination-uri", metavar="URI", help="override outbound.termination_uri")
    server_options(campaign, serve=False)
    campaign.set_defaults(func=_campaign)
    return campaign


def _campaign(args: argparse.Namespace) -> int:
    from ..serving import settings_from

    settings = settings_from(args)
    if not settings.storage.url:
        print("bridge campaign: campaigns keep their state in the records database: set storage.url", file=sys.stderr)
        return 2
    if args.action == "status":
        return _status(settings, args.target, args.json)
    if not args.name:
        print("bridge campaign run: --name is required", file=sys.stderr)
        return 2
    if not settings.outbound.termination_uri:
        print("bridge campaign run: outbound.termination_uri is not configured", file=sys.stderr)
        return 2
    overrides = {
        k: v
        for k, v in (
            ("cps", args.cps),
            ("max_concurrent", args.max_concurrent),
            ("amd", args.amd),
            ("dnc_file", args.dnc),
        )
        if v is not None
    }
    campaign = settings.outbound.campaign.model_validate({**settings.outbound.campaign.model_dump(), **overrides})
    return _run(settings, campaign, args.target, args.name)


def _status(settings, name: str, as_json: bool) -> int:
    from sqlalchemy import inspect

    from ..outbound.campaign import CampaignStore
    from ..records.store import create_db_engine

    engine = create_db_engine(settings.storage.url)
    if "campaigns" not in inspect(engine).get_table_names():
        print(f"bridge campaign status: no campaign {name!r} (no campaigns in this database)", file=sys.stderr)
        return 1
    store = CampaignStore(engine, name)
    status = store.status()
    if status is None:
        print(f"bridge campaign status: no campaign {name!r}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({**status, "callees_detail": store.callees()}, indent=1))
        return 0
    print(
        f"campaign {status['name']}: {status['state']}, {status['done']} of {status['callees']} callees done "
        f"({status['pending']} pending, {status['dialing']} dialing), {status['attempts']} dial(s)"
    )
    for outcome, count in status["outcomes"].items():
        print(f"  {outcome:16} {count}")
    return 0


def _run(settings, campaign, path: str, name: str) -> int:
    from ..calls.campaign_runner import CampaignRunner
    from ..outbound.callees import read_callees, read_dnc_file
    from ..outbound.campaign import CampaignStore, utcnow
    from ..records.store import create_db_engine, upgrade
    from ..runtime import run
    from ..serving import log, prepare

    try:
        callees, problems = read_callees(path)
        dnc = read_dnc_file(campaign.dnc_file)
    except (OSError, ValueError) as exc:
        print(f"bridge campaign run: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"bridge campaign run: {path}: {problem}: left out", file=sys.stderr)
    engine = create_db_engine(settings.storage.url)
    upgrade(engine)  # the database must answer: the state lives there
    store = CampaignStore(engine, name)
    loaded = store.load(str(path), callees, utcnow())
    log.info(
        "campaign %s: %s, %d callee(s) added, %d left mid-call by an earlier run closed",
        name,
        "created" if loaded["created"] else "resumed",
        loaded["added"],
        loaded["interrupted"],
    )
    engines, metrics = prepare(settings)
    from ..server import BridgeServer

    async def main() -> int:
        server = BridgeServer(settings, engines, metrics)
        await server.start()
        runner = CampaignRunner(server, store, campaign, dnc)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        print(f"campaign {name}: running", flush=True)
        state = await runner.run()
        await server.wait_idle()
        await server.stop()
        status = store.status()
        print(
            f"campaign {name}: {state}; {status['done']} of {status['callees']} done; "
            + ", ".join(f"{k} {v}" for k, v in status["outcomes"].items()),
            flush=True,
        )
        return 0

    return run(main())
