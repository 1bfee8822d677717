"""Packaging beyond what pyproject.toml can say: the shipped playbooks live in the repository's top-level
`playbooks/` directory (where users and docs expect them) and are installed as the package data `bot/playbooks`,
the fallback when there is no ./playbooks (bot/engine/playbook_sources.py)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["bot", "bot.*"]), "bot.playbooks"],
    package_dir={"bot.playbooks": "playbooks"},
)
