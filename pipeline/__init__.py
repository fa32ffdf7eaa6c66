"""Dagster wiring: Definitions, resources, jobs and the demo runner."""
