"""What every operation stands on: the context (engine, audit, actor, key ring, profiles, drivers), jobs."""
