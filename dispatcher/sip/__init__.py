"""What Kamailio calls: each worker's router (SIP events in, decisions out), its decisions
(plan on the snapshot, claim in Redis), the inbound rules, the model's tables for the core,
and the worker's own metrics.

Imports config/, state/, the core, settings and telemetry; only kamailio/kemi.py, the
benchmarks and the tests import it.
"""
