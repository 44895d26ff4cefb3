"""Pure rules and result types: no I/O, no database session (budget, policy, views, facts)."""
