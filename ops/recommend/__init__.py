"""Recommenders over semantic IDs and their baselines (ops only, no Dagster): token vocabularies of code tables,
the prefix index and the decoders that only yield existing items, popularity."""
