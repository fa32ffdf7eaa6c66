"""The science: plain typed Python with no Dagster imports, importable and testable on its own."""
