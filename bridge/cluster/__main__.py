"""``python -m bridge.cluster [run options]``: run a cluster (:mod:`bridge.cluster.runner`,
``scripts/run_cluster.sh``); ``python -m bridge.cluster lists ...``: write Kamailio's list
files for real machines (:func:`bridge.cluster.files.main`)."""

import sys

if sys.argv[1:2] == ["lists"]:
    from .files import main

    sys.exit(main(sys.argv[2:]))

from .runner import main  # noqa: E402

sys.exit(main())
