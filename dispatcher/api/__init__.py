"""The HTTP API for upstream apps (`maildispatch api`): an ASGI app on uvicorn.

Modules: `app` (routes and the ASGI application), `auth` (API keys, the admin key, scopes),
`accounts` (what an account may send, from the store and config), `problems` (RFC 9457
errors), `intake` (requests to stored messages, group-committed), `ratelimit` (GCRA per
key), `openapi` (the document at /openapi.json), `server` (uvicorn).
"""
