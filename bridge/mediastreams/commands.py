"""``bridge twilio call NUMBER``: Twilio REST actions for Media Streams mode."""

from __future__ import annotations

import argparse
import sys

from ..config import load_settings
from ..runtime import setup_logging


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``twilio`` sub-command on the ``bridge`` parser."""
    twilio = sub.add_parser(
        "twilio", help="Twilio REST actions: 'call NUMBER' places a call that streams to this bridge"
    )
    twilio.add_argument("action", choices=["call"])
    twilio.add_argument("number", help="E.164 number to call")
    twilio.add_argument("--from", dest="from_number", help="caller ID (a Twilio number)")
    twilio.add_argument("--public-url", help="the bridge's public base URL (https://...)")
    twilio.add_argument("--config", help="YAML merged over config/default.yaml")
    twilio.add_argument("--api-base-url", help=argparse.SUPPRESS)
    twilio.set_defaults(func=_twilio)
    return twilio


def _twilio(args: argparse.Namespace) -> int:
    """``bridge twilio call NUMBER``: an outbound call whose TwiML connects a media stream."""
    from twilio.twiml.voice_response import VoiceResponse

    from .leg import TwilioCallControl

    overrides = {
        "mediastreams": {
            k: v
            for k, v in (
                ("public_url", args.public_url),
                ("api_base_url", args.api_base_url),
                ("from_number", args.from_number),
            )
            if v
        }
    }
    settings = load_settings(args.config, overrides)
    setup_logging("WARNING")
    ms = settings.mediastreams
    if not (ms.account_sid and ms.auth_token and ms.public_url and ms.from_number):
        print(
            "bridge twilio call needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, --public-url and --from", file=sys.stderr
        )
        return 2
    from .http import ws_base

    response = VoiceResponse()
    base = ms.public_url.rstrip("/")
    response.connect().stream(url=ws_base(base) + "/media-stream")
    sid = TwilioCallControl(ms.account_sid, ms.auth_token, ms.api_base_url).create(
        args.number, ms.from_number, str(response)
    )
    print(f"call {sid} to {args.number} created; its audio will stream to {base}/media-stream")
    return 0
