"""The command-center service: real-time loop on the twin, HTTP/WebSocket API, operator actions, audit.

Layers (after the FastAPI template): `config` (settings validated at start-up), `security` (tokens,
rate limit), `store` (SQLAlchemy audit store), `engine` (the twin loop; the only part touching SUMO),
`context` (the parts wired together), `deps`/`routes`/`app` (HTTP), `command` (`citysignal serve`).
Importing this package starts nothing; `context.build_service` + `app.create_app` do.
"""
