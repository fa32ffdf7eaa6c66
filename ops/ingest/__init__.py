"""Raw-file loaders: one module per source, each declaring itself once (`SOURCE`, ops/ingest/source.py), and
the registry of those declarations. A new source = one module with its loader and `SOURCE`, plus one
`register(...)` line here."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ops.ingest import amazon, hm, mind
from ops.ingest.common import FileAccount, IngestError, IngestResult
from ops.ingest.source import Source
from ops.registry import Registry

if TYPE_CHECKING:
    from ops.datasets import DatasetSpec

SOURCES: Registry[Source] = Registry("source")
register = SOURCES.register
get_source = SOURCES.lookup


def ingest(spec: DatasetSpec, raw_root: str | Path, workdir: str | Path | None = None) -> IngestResult:
    """Read a dataset's original files into canonical frames (items, interactions, quarantine) + accounts."""
    return get_source(spec.source).load(spec.raw_path(raw_root), spec, Path(workdir) if workdir else None)


register(mind.SOURCE)
register(amazon.SOURCE)
register(hm.SOURCE)

__all__ = ["SOURCES", "FileAccount", "IngestError", "IngestResult", "Source", "get_source", "ingest", "register"]
