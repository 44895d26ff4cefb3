"""Operations: one step over many targets (power, boot, sensors, event log, sweeps, UPS, facts)."""
