"""Scale-out tooling: Kamailio's dispatcher in front of several ``bridge serve`` nodes.

Nothing here is in the call path: Kamailio (``deploy/kamailio/kamailio.cfg``) spreads
INVITEs over the nodes and fails over; this package writes its list files
(:mod:`.files`) and runs a cluster on one machine for trials and tests
(:mod:`.runner`, ``scripts/run_cluster.sh``).
"""
