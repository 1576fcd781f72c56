"""``bridge`` subcommands whose subject sits below the call layer: ``bridge campaign``
(it runs a server and dials through it) and ``bridge models`` (``check`` loads the
engines). They are entry points, at the top of the layer rule (docs/architecture.md),
so their packages (:mod:`bridge.outbound`, :mod:`bridge.models`) stay leaves of it.
"""
