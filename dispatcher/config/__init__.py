"""The configuration model: tenants, agents, groups and inbound rules, validated, and their
JSON/YAML files.

Imports nothing else of the package: every other part builds on it.
"""
