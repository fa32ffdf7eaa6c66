"""Raw-file loaders: one module per source, one entry point for all."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ops.ingest.common import FileAccount, IngestError, IngestResult

if TYPE_CHECKING:
    from ops.datasets import DatasetSpec


def ingest(spec: DatasetSpec, raw_root: str | Path, workdir: str | Path | None = None) -> IngestResult:
    """Read a dataset's original files into canonical frames (items, interactions, quarantine) + accounts."""
    from ops.ingest import amazon, hm, mind

    raw_dir = spec.raw_path(raw_root)
    if spec.source == "mind":
        return mind.load_mind(raw_dir, spec.name)
    if spec.source == "amazon":
        return amazon.load_amazon(raw_dir, spec.name, str(spec.category), spec.version,
                                  keep_unreviewed_items=bool(spec.options.get("keep_unreviewed_items", False)))
    if spec.source == "hm":
        return hm.load_hm(raw_dir, spec.name, workdir=Path(workdir) if workdir else None,
                          validate_customers=bool(spec.options.get("validate_customers", True)))
    raise IngestError(f"no loader for source {spec.source!r}")


__all__ = ["FileAccount", "IngestError", "IngestResult", "ingest"]
