"""Call-group dispatcher for Kamailio: selection core, shared Redis state, routing."""

__version__ = "0.1.0"
