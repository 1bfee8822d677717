"""The playbooks shipped with the package: in the wheel, the fallback outside the repository, overridden by a
user's own directory, and `clearml-chatops playbooks` says where each one came from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in (REPO / "playbooks").glob("*.yaml"))


def cli(*args: str, cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML", "SLACK"))}
    env.update(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "state"))
    return env


def empty_dir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_demo_from_an_empty_directory_runs_the_shipped_playbooks(tmp_path: Path) -> None:
    proc = cli("demo", "--format", "json", cwd=empty_dir(tmp_path), env=clean_env(tmp_path))
    assert proc.returncode == 1, proc.stderr  # the demo fleet has problems; 2 would be "no playbooks found"
    doc = json.loads(proc.stdout)
    assert sorted(doc["playbooks"]) == SHIPPED
    assert f"running {len(SHIPPED)} playbooks" in proc.stderr  # 7 with versions.yaml (issue 15)


def test_run_by_name_from_an_empty_directory_uses_the_shipped_playbook(sim: Any, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    key, secret = sim.keys[0]
    env.update(CLEARML_API_HOST=sim.api_url, CLEARML_WEB_HOST=sim.web_url, CLEARML_FILES_HOST=sim.files_url,
               CLEARML_API_ACCESS_KEY=key, CLEARML_API_SECRET_KEY=secret)
    proc = cli("run", "health", "--format", "json", "--no-store", cwd=empty_dir(tmp_path), env=env)
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["playbooks"] == ["health"]


def test_playbooks_command_says_where_each_one_came_from(tmp_path: Path) -> None:
    work = empty_dir(tmp_path)
    env = clean_env(tmp_path)
    proc = cli("playbooks", "--format", "json", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert sorted(p["name"] for p in listed["playbooks"]) == SHIPPED
    for pb in listed["playbooks"]:
        assert pb["origin"] == "shipped" and Path(pb["path"]).is_file() and Path(pb["path"]).stem == pb["name"]
        assert pb["checks"] > 0
    text = cli("playbooks", cwd=work, env=env).stdout
    assert "shipped with clearml-chatops" in text and "health" in text and "health.yaml" in text


def test_a_users_directory_overrides_the_shipped_playbooks(tmp_path: Path) -> None:
    work = empty_dir(tmp_path)
    env = clean_env(tmp_path)
    (work / "playbooks").mkdir()
    (work / "playbooks" / "gpu-fleet.yaml").write_text(
        "name: gpu-fleet\ndescription: our GPU boxes\nchecks:\n  - check: agents.stale\n"
    )
    listed = json.loads(cli("playbooks", "--format", "json", cwd=work, env=env).stdout)
    assert [(p["name"], p["origin"], p["path"]) for p in listed["playbooks"]] == [
        ("gpu-fleet", "cwd", "playbooks/gpu-fleet.yaml")]
    assert sorted(listed["shipped_not_used"]) == SHIPPED
    text = cli("playbooks", cwd=work, env=env).stdout
    assert "your ./playbooks directory" in text and "not used" in text
    proc = cli("run", "health", cwd=work, env=env)
    assert proc.returncode == 2 and "available: gpu-fleet" in proc.stderr
    # an explicit directory wins over both
    other = tmp_path / "elsewhere"
    shutil.copytree(REPO / "playbooks", other)
    listed = json.loads(cli("playbooks", "--playbooks", str(other), "--format", "json", cwd=work, env=env).stdout)
    assert {p["origin"] for p in listed["playbooks"]} == {"option"} and len(listed["playbooks"]) == len(SHIPPED)


def test_the_wheel_ships_the_playbooks_from_the_top_level_directory(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the repository.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("bot", "playbooks"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = list(out.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.startswith("bot/playbooks/")) == [f"bot/playbooks/{p}.yaml" for p in SHIPPED]
    assert not [n for n in names if n.startswith("playbooks/")]
    assert "bot/sim/scenarios/incident-zoo.yaml" in names and "bot/engine/playbook_sources.py" in names
    assert (REPO / "playbooks" / "health.yaml").is_file()  # the source directory stays where users expect it


def test_the_bot_names_the_shipped_directory_as_such() -> None:
    from bot.engine.playbook_sources import origin_of, shipped_playbooks_dir
    from bot.slack.commands.help import PlaybookInfo, render_playbooks

    shipped = shipped_playbooks_dir()
    assert shipped is not None and sorted(p.stem for p in shipped.glob("*.yaml")) == SHIPPED
    message = render_playbooks([PlaybookInfo("health", "up?", 6)], str(shipped), origin=origin_of(shipped))
    assert "shipped with clearml-chatops" in json.dumps(message.blocks_as_dicts())
