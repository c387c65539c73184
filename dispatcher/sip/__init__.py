"""What Kamailio calls: each worker's router (SIP events in, decisions out), its decisions
(plan on the snapshot, claim in Redis), the inbound rules, the model's tables for the core,
the worker's own metrics, and the node's edge rules (flood, scanners, failed authentications).

Imports config/, state/, the core, settings and telemetry; only kamailio/kemi.py, the
benchmarks and the tests import it.
"""
