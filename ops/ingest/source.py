"""What a raw-data source declares, once, in its own module (`SOURCE = Source(...)`), and the registry that
collects the declarations (ops/ingest/__init__.py). Everything source-specific outside the loaders reads it:
the dataset registry (attributes, LAMIA's content attributes, what a dataset entry must name), the ingest
asset (which loader), `impressions` (logged by the source, or negatives sampled), and the sample generator."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ops.datasets import DatasetSpec
    from ops.ingest.common import IngestResult

# (raw directory, the dataset's spec, scratch directory or None) -> the canonical frames and their accounting
Loader = Callable[[Path, "DatasetSpec", "Path | None"], "IngestResult"]
# (output directory, SampleSize, seed, corrupt, **options) -> the directory of files in the source's own format
SampleGenerator = Callable[..., Path]


@dataclass(frozen=True)
class Source:
    name: str
    attributes: tuple[str, ...]  # the item text columns of `items`, in this order
    content_attributes: int  # LAMIA's r: the first r attributes form an item's content
    load: Loader
    generate_sample: SampleGenerator | None = None  # a bundled sample in the original format (planted structure)
    # "logged": the source logs shown-and-not-clicked impressions (the loader fills `shown_not_clicked`);
    # "sampled": `impressions` samples negatives from the catalog
    impressions: Literal["logged", "sampled"] = "sampled"
    required: tuple[str, ...] = ()  # DatasetSpec fields a dataset of this source must set (e.g. Amazon's category)
    # the generator's options for a dataset of this source (e.g. Amazon's category and release)
    sample_options: Callable[[DatasetSpec], Mapping[str, Any]] = field(default=lambda spec: {})
    # categorical attributes a code position may recover (the ID quality report's NMI per position)
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.content_attributes <= len(self.attributes):
            raise ValueError(f"source {self.name}: content_attributes must be in [1, {len(self.attributes)}]")
