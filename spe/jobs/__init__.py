"""The central record of jobs sent to the nodes under a data permit (the hub's side)."""
