"""Thin Dagster assets, one module per stage: read inputs, call `ops`, write through `storage`, emit metadata."""
