"""The inventory: SQLModel tables, queries, lifecycle, selectors, import/export. No hardware I/O."""
