"""The processes that `make run` / `make up` and the tests start: redis-server, the admin
API, Kamailio, SIPp, baresip phones for the tests, and the whole stack with the demo tenant.

Imports whatever it starts; nothing else in the package imports it.
"""
