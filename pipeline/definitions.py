"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster definitions validate -w workspace.yaml`."""
from __future__ import annotations

import dagster as dg

from assets import codes, embed, evaluation, ingest, palette, quality, recommend, serving
from pipeline import automation
from pipeline.jobs import JOBS
from pipeline.resources import default_resources

STAGES = (ingest, embed, palette, codes, quality, serving, recommend, evaluation)  # each exports its own `defs`


defs = dg.Definitions.merge(
    *(stage.defs for stage in STAGES),
    automation.definitions(),
    dg.Definitions(jobs=JOBS, resources=default_resources()),
)
