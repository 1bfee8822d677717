"""The Slack bot: a Bolt app (built by `create_app`), its listeners, Block Kit message builders,
the Slack Web API client and the outbox through which every Slack write goes.

Nothing here is built at import time: `serve` (or a test) builds the app from settings.
"""
