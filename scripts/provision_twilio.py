#!/usr/bin/env python3
"""Create or update the Twilio Elastic SIP Trunk that points at bridge (idempotent).

    TWILIO_ACCOUNT_SID=AC... TWILIO_AUTH_TOKEN=... .venv/bin/python scripts/provision_twilio.py \\
        --name bridge-prod --domain bridge-prod.pstn.twilio.com \\
        --origination 'sip:edge1.example.com:5060 priority=10 weight=50' \\
        --origination 'sip:edge2.example.com:5060 priority=10 weight=50' \\
        --number +14155550100 --termination-ip 203.0.113.10/32 [--dry-run | --remove]

See bridge/provisioning/twilio_trunk.py for what it manages.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.provisioning.cli import main  # noqa: E402

sys.exit(main())
