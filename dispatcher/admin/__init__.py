"""The admin side the API and the command line share: config operations on a tenant, putting
a config into Redis (versioned, audited), API tokens, and the CLI's admin commands.

Imports config/, state/ and reports/ (the live summary for `status`); the API, the CLI and the
processes of run/ import it.
"""
