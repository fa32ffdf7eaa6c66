"""What a run is checked for before any work, in its first step (the storage resource's set-up) and by
`pipeline.demo` before it launches: every selected op's config within the ranges its ops dataclasses declare
(ops.config), settings that contradict each other, and every model it will load loadable. A bad value fails the
run in seconds with the op, the field, the value and the allowed range, instead of inside the step that uses it,
after the stages before it.

The op -> run-config class map is read off the definitions (each asset function's `config` parameter), so a new
asset is checked without being listed anywhere.
"""
from __future__ import annotations

import functools
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
import pydantic

from assets.configs import OpsConfig
from ops.config import ConfigError

OFFLINE_CHOICES = ("offline choices: `all-MiniLM-L6-v2` (sentence encoder), `SmolLM2-135M-Instruct` (pretrained "
                   "causal LM), or the path of a local Hugging Face model folder")


@functools.cache
def run_config_classes() -> dict[str, type[OpsConfig]]:
    """Op name -> the run-config class of its asset function, over every asset of the definitions."""
    from pipeline.definitions import defs

    found: dict[str, type[OpsConfig]] = {}
    for assets_def in defs.get_repository_def().assets_defs_by_key.values():
        # a graph-backed asset (the sharded embeddings) gives every step its own config: the first one's class
        for op_def in assets_def.node_def.iterate_op_defs():
            fn: Any = op_def.compute_fn  # a DecoratedOpFunction for @asset / @op functions (dagster-private type)
            if not getattr(fn, "has_config_arg", lambda: False)():
                continue
            annotation = fn.get_config_arg().annotation
            if isinstance(annotation, str):
                annotation = typing.get_type_hints(fn.decorated_fn)["config"]
            if isinstance(annotation, type) and issubclass(annotation, OpsConfig):
                found[assets_def.node_def.name] = annotation
                break
    return found


def selected_ops(run: dg.DagsterRun) -> set[str] | None:
    """Op names of the run's assets (an op's name is its asset key joined by `__`); None when unknown (an
    ephemeral job of `dg.materialize`, whose config then names the ops to check)."""
    if run.asset_selection:
        return {"__".join(k.path) for k in run.asset_selection}
    from pipeline.definitions import defs

    try:
        keys = defs.resolve_job_def(run.job_name).asset_layer.executable_asset_keys
    except Exception:  # a job these definitions do not know
        return None
    return {"__".join(k.path) for k in keys}


def _shown(value: Any) -> str:
    return repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 80 else repr(value)[:77] + "..."


def config_problems(run_config: Mapping[str, Any] | None, ops: Iterable[str] | None = None) -> list[str]:
    """One message per op config value of `run_config` outside its range or contradicting another, e.g.
    `ops.code_table__rqvae.config.lr = -1: Input should be greater than 0`, for the ops in `ops` (all when None)."""
    classes = run_config_classes()
    wanted = set(ops) if ops is not None else None
    problems = []
    for op, entry in ((run_config or {}).get("ops") or {}).items():
        if op not in classes or (wanted is not None and op not in wanted):
            continue
        values = (entry or {}).get("config") or {}
        try:
            config = classes[op](**values)
        except pydantic.ValidationError as error:
            for e in error.errors():
                field = ".".join(str(part) for part in e["loc"])
                problems.append(f"ops.{op}.config.{field} = {_shown(e.get('input'))}: {e['msg']}")
            continue
        for ops_type in config.ops_types:  # the ops dataclasses: their rules between fields
            try:
                config.build(ops_type)
            except ConfigError as error:
                problems.append(f"ops.{op}.config: {error}")
    return problems


def model_problems(run_config: Mapping[str, Any] | None, ops: Iterable[str] | None = None) -> list[str]:
    """One message per model setting of the selected ops that cannot be loaded, naming its run-config key."""
    from ops.models import model_problem

    ops_config = (run_config or {}).get("ops") or {}
    wanted = set(ops) if ops is not None else None
    problems = []
    for op, config_type in run_config_classes().items():
        if not config_type.loads_model or (wanted is not None and op not in wanted):
            continue
        name = ((ops_config.get(op) or {}).get("config") or {}).get("model", config_type.model_fields["model"].default)
        if (problem := model_problem(name)) is not None:
            problems.append(f"ops.{op}.config.model = {name!r} cannot be loaded: {problem}; {OFFLINE_CHOICES}")
    return problems


def run_problems(run: dg.DagsterRun) -> list[str]:
    ops = selected_ops(run)
    return [*config_problems(run.run_config, ops), *model_problems(run.run_config, ops)]
