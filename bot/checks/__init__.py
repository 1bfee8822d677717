"""The check library, one module per troubleshooting area. Importing this package registers every check."""

from bot.checks import agents, canary, cloud, compatibility, datasets, queues, repro, server, storage  # noqa: F401
