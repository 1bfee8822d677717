"""Bolt listeners by domain; each module has `register(app)` and reads its dependencies from
`context["services"]`."""
