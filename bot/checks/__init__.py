"""The check library, one module per troubleshooting area. Importing this package registers every check."""

from bot.checks import agents, cloud, compatibility, datasets, queues, repro, server, storage  # noqa: F401
