"""Audio for callers: the prompts (greeting, music on hold, position and wait announcements,
voicemail greeting and tone), their checks on upload, and the recordings of voicemail.

Imports config/ and state/; sip/, the API and run/ import it. RTPengine plays and records;
Kamailio's rtpengine module talks to it.
"""
