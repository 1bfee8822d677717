"""Generated fleets: a realistic mix, deterministic, and the full benchmark size loads and answers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bot.sim.fleet import generate_fleet, parse_fleet_spec
from tests.helpers import sim_data


def test_fleet_mix_is_realistic_and_deterministic(sim_factory: Any) -> None:
    fleet = generate_fleet(workers=200, queues=30, tasks=20000, seed=3)
    assert fleet == generate_fleet(workers=200, queues=30, tasks=20000, seed=3)
    assert (len(fleet["workers"]), len(fleet["queues"]), len(fleet["tasks"])) == (200, 30, 20000)
    statuses = Counter(t["status"] for t in fleet["tasks"])
    assert statuses["completed"] > statuses["failed"] > statuses["queued"] > 0
    assert statuses["in_progress"] > 0 and statuses["created"] > 0

    sim = sim_factory(fleet)
    live = sim_data(sim, "workers.get_all", {})["workers"]
    live_ids = {w["id"] for w in live}
    assert 150 < len(live) < 200  # dead workers have vanished
    stale = [w for w in sim_data(sim, "workers.get_all", {"last_seen": 120})["workers"]]
    assert len(stale) < len(live)  # some are listed but silent for minutes
    running = sim_data(sim, "tasks.get_all", {"status": ["in_progress"], "only_fields": ["last_worker"]})["tasks"]
    orphans = [t for t in running if t["last_worker"] not in live_ids]
    assert orphans and len(orphans) < len(running)
    queues = sim_data(sim, "queues.get_all", {"only_fields": ["name", "entries"]})["queues"]
    backlog = sorted((len(q.get("entries", [])) for q in queues), reverse=True)
    assert backlog[0] > 50 and backlog[-1] == 0  # a few queues carry the backlog
    assert sum(backlog) == statuses["queued"]
    default = sim_data(sim, "queues.get_default", {})
    assert default["name"] == "default"


def test_benchmark_scale_fleet_loads_and_answers(sim_factory: Any) -> None:
    sim = sim_factory(generate_fleet(workers=2000, queues=300, tasks=200000))
    with sim.state.lock:
        queued = sim.state.count_status("queued")
    seen: set[str] = set()
    page = 0
    while True:
        batch = sim_data(sim, "tasks.get_all", {"status": ["queued"], "page": page, "page_size": 500,
                                                "only_fields": ["id", "execution.queue"]})["tasks"]
        seen.update(t["id"] for t in batch)
        if len(batch) < 500:
            break
        page += 1
    assert len(seen) == queued == 6000
    assert len(sim_data(sim, "workers.get_all", {"last_seen": 600})["workers"]) > 1800


@pytest.mark.parametrize("bad", ["workers=x", "cats=3", "workers", "tasks=-1"])
def test_fleet_spec_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="bad fleet item"):
        parse_fleet_spec(bad)
    assert parse_fleet_spec("workers=2,queues=3,tasks=4,seed=5") == {"workers": 2, "queues": 3, "tasks": 4, "seed": 5}
