"""The facade (:class:`fleet.Fleet`) and its read models: what the CLI, the TUI and user scripts call."""
