"""Domain knowledge shared by checks, the slash-command look-ups and actions.

What a task's requirements say, what its environment failed to capture, why a run failed (the failure-cause
catalogue, a data file), what differs between two runs and how a user names a task (one `parse_ref`). Pure
functions over ClearML documents: nothing here calls ClearML, the engine's runner or Slack.
"""
