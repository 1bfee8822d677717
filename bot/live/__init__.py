"""The live stand-in: real `clearml-agent` processes (PyPI's, not ours) running tasks against the simulator, so the
bot is proven against clients nobody here wrote.

- `agents`: start, kill (SIGKILL of the whole process group, as when a host dies), stop and restart agents, each
  in its own HOME with a generated clearml.conf; every process is found again by its pid file.
- `launcher`: `python -m bot.live.launcher restart --state DIR --worker ID`, the program a `command` rotate
  backend runs to restart an agent (what `ssh host systemctl restart clearml-agent` is in production).
- `timewarp`: run the simulator's clock faster than wall time (tests cover minutes of agent reports in seconds).
- `demo`: `clearml-chatops demo --live` (tasks are inline programs: `script.diff` with an entry point and no
  repository, cloned from the templates of the simulator's `live-demo` scenario).

Needs the `[live]` extra (`pip install 'clearml-chatops[live]'`, which installs clearml-agent).
"""
