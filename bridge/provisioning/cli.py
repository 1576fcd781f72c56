"""``scripts/provision_twilio.py``: the command line of the trunk provisioning
(:mod:`.twilio_trunk`): arguments, credentials from the environment, the plan printed,
applied unless ``--dry-run``; exit 0 done, 1 refused by the API, 2 bad arguments."""

from __future__ import annotations

import argparse
import os
import sys

from .spec import TRANSFER_CALLER_IDS, TRANSFER_MODES, Origination, SpecError, TrunkSpec
from .twilio_trunk import Provisioner


def build_client(account_sid: str, auth_token: str, api_base: str | None = None):
    """A ``twilio.rest.Client``; ``api_base`` (an HTTP(S) base URL) replaces both
    ``https://trunking.twilio.com`` and ``https://api.twilio.com`` (a regional
    gateway, an inspecting proxy, or the tests' stand-in)."""
    from twilio.rest import Client

    client = Client(account_sid, auth_token)
    if api_base:
        client.trunking.base_url = api_base.rstrip("/")
        client.api.base_url = api_base.rstrip("/")
    return client


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="provision_twilio.py", description="Create or update the Twilio Elastic SIP Trunk that points at bridge."
    )
    p.add_argument("--name", required=True, help="the trunk's friendly name (how it is found again)")
    p.add_argument("--domain", help="termination domain, NAME.pstn.twilio.com (for bridge dial)")
    p.add_argument(
        "--origination",
        action="append",
        default=[],
        metavar="'URI [priority=N] [weight=N]'",
        help="an origination URL per node or Kamailio address, e.g. 'sip:edge1.example.com:5060 priority=10 weight=50'",
    )
    p.add_argument("--priority", type=int, default=10, help="default origination priority (lowest first)")
    p.add_argument("--weight", type=int, default=10, help="default origination weight")
    p.add_argument(
        "--number",
        action="append",
        default=[],
        metavar="E164",
        help="a phone number of the account to route to the trunk",
    )
    p.add_argument(
        "--termination-ip",
        action="append",
        default=[],
        metavar="CIDR",
        help="addresses allowed to place calls (bridge dial)",
    )
    p.add_argument("--termination-user", help="SIP user for termination; password from TWILIO_TERMINATION_PASSWORD")
    p.add_argument("--rotate-password", action="store_true", help="set the termination user's password again")
    p.add_argument(
        "--secure", action=argparse.BooleanOptionalAction, default=False, help="secure trunking: TLS and SRTP only"
    )
    p.add_argument("--transfer", default="enable-all", choices=TRANSFER_MODES, help="call transfer with SIP REFER")
    p.add_argument("--transfer-caller-id", default="from-transferee", choices=TRANSFER_CALLER_IDS)
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--remove", action="store_true", help="delete the trunk and the lists this tool made for --name")
    p.add_argument("--api-base", default=os.environ.get("TWILIO_API_BASE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from twilio.base.exceptions import TwilioException, TwilioRestException

    args = parse_args(argv)
    sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    if not sid or not token:
        print("provision_twilio: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN", file=sys.stderr)
        return 2
    try:
        spec = TrunkSpec(
            name=args.name,
            domain=args.domain,
            origination=[Origination.parse(o, args.priority, args.weight) for o in args.origination],
            numbers=args.number,
            termination_ips=args.termination_ip,
            termination_user=args.termination_user,
            termination_password=os.environ.get("TWILIO_TERMINATION_PASSWORD"),
            rotate_password=args.rotate_password,
            secure=args.secure,
            transfer_mode=args.transfer,
            transfer_caller_id=args.transfer_caller_id,
        )
        if not args.remove:
            spec.check()
    except SpecError as exc:
        print(f"provision_twilio: {exc}", file=sys.stderr)
        return 2
    provisioner = Provisioner(build_client(sid, token, args.api_base))
    try:
        steps = provisioner.plan_remove(spec) if args.remove else provisioner.plan(spec)
        changes = [s for s in steps if s.run is not None]
        for step in steps:
            print(f"{step.mark} {step.text}")
        if not changes:
            print("no changes: " + ("nothing to remove" if args.remove else "the trunk is as asked"))
            return 0
        if args.dry_run:
            print(f"plan: {len(changes)} change(s) (dry run: nothing changed)")
            return 0
        for step in changes:
            step.run()
        print(
            f"applied {len(changes)} change(s)"
            + (f"; trunk {provisioner.trunk_sid}" if provisioner.trunk_sid and not args.remove else "")
        )
        return 0
    except SpecError as exc:  # found while reading the account: a number it does not own
        print(f"provision_twilio: {exc}", file=sys.stderr)
        return 1
    except TwilioRestException as exc:
        print(
            f"provision_twilio: Twilio API answered {exc.status} (error {exc.code}) to {exc.method} {exc.uri}: {exc.msg}",
            file=sys.stderr,
        )
        return 1
    except TwilioException as exc:
        print(f"provision_twilio: Twilio API: {exc}", file=sys.stderr)
        return 1
