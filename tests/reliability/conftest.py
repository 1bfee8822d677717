"""Fault injection, restart and security tests (RELIABILITY.md lists every fault and the test proving it).

The Slack and ClearML fixtures are the end-to-end ones: the fake Slack Web API and the ClearML simulator on loopback,
the bot serving in this process or as a real `clearml-chatops serve` process."""

from __future__ import annotations

import os

from hypothesis import settings

from tests.e2e.conftest import basic_sim, clean_env, fake_slack, http_bot  # noqa: F401  (fixtures, re-exported)

# Fuzzers run a fixed, bounded set of examples in CI (derandomized: the same examples every run, no example
# database), a few seconds each; HYPOTHESIS_PROFILE=thorough explores more when hunting.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None, print_blob=True)
settings.register_profile("thorough", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
