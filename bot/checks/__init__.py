"""The check library, one module per troubleshooting area. Importing this package registers every check (and
hands the registry the severity table, bot/checks/severity.py)."""

from bot.checks import agents, canary, cloud, compatibility, datasets, queues, repro, server, storage  # noqa: F401
from bot.checks.severity import SEVERITY_POLICY
from bot.engine.registry import set_severity_policy

set_severity_policy(SEVERITY_POLICY)
