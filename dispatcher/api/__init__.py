"""The admin API: REST over the tenants' config and live state, OpenAPI, metrics.

app.py            `create_app(settings)`: routers, orjson responses, error handlers
auth.py           bearer tokens (tenant admin / read-only, bootstrap super-admin)
async_store.py    redis.asyncio calling the same FUNCTION library as the workers
config_io.py      read-apply-put with retries and If-Match, parsed-config cache
schemas.py        request and response bodies besides the config model
live_board.py     the live view with queued callers and phone registrations (one read)
routes_*.py       one router per resource (tenants, groups, agents, inbound, tokens, SIP
                  credentials, live,
                  prompts, voicemail, dashboard, metrics); more (reports) are mounted the same
                  way

Imports admin/, config/, media/, reports/, state/ and telemetry; only the processes of run/
start it (uvicorn, by name), nothing imports it.
"""
