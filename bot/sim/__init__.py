"""ClearML API simulator: a real HTTP server speaking the clearml-server REST API (and its file server),
driven by YAML scenarios, for demos, playbook authoring, benchmarks and tests.

It shares no code with `bot.clearml` (the bot's client), so a bug on one side cannot hide one on the other.
"""

from bot.sim.scenario import ScenarioError, list_scenarios
from bot.sim.server import SimServer

__all__ = ["ScenarioError", "SimServer", "list_scenarios"]
