"""Workflows: multi-step, resumable operations (imaging, decommissioning, remediation, schedules)."""
