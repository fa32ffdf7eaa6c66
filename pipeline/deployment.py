"""The production instance (pipeline/deploy/dagster.yaml: PostgreSQL storage, run queue, `gpu` pool, run
monitoring), set up once before the daemon and the webserver start:

    python -m pipeline.deployment --home .dagster_prod --gpu-slots 1

copies the instance config into the home, checks that the database answers, creates or migrates its schema (once,
before several processes would race on a fresh database) and sets the `gpu` pool's slots.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import dagster as dg

DEPLOY_DIR = Path(__file__).resolve().parent / "deploy"
PG_VARS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def postgres_problem(env: dict[str, str] | None = None, timeout_s: int = 3) -> str | None:
    """Why the instance's PostgreSQL database cannot be used (a missing variable, no server, no database), or
    None when it answers."""
    import psycopg2

    env = dict(os.environ if env is None else env)
    missing = [name for name in PG_VARS if name not in env]
    if missing:
        return f"set {', '.join(missing)} (pipeline/deploy/env.example)"
    try:
        psycopg2.connect(host=env["DAGSTER_PG_HOST"], port=int(env["DAGSTER_PG_PORT"]), user=env["DAGSTER_PG_USER"],
                         password=env["DAGSTER_PG_PASSWORD"] or None, dbname=env["DAGSTER_PG_DB"],
                         connect_timeout=timeout_s).close()
    except psycopg2.OperationalError as e:
        return (f"PostgreSQL at {env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']} database {env['DAGSTER_PG_DB']} "
                f"does not answer: {str(e).strip().splitlines()[0]}")
    return None


def init(home: Path, gpu_slots: int) -> None:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY_DIR / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    if (problem := postgres_problem()) is not None:
        raise SystemExit(f"deployment: {problem}")
    with dg.DagsterInstance.get() as instance:  # creates the schema on a fresh database
        instance.upgrade()  # and migrates an older one
        instance.event_log_storage.set_concurrency_slots("gpu", gpu_slots)
    print(f"instance at {home}: PostgreSQL {os.environ['DAGSTER_PG_HOST']}:{os.environ['DAGSTER_PG_PORT']}/"
          f"{os.environ['DAGSTER_PG_DB']}, gpu pool {gpu_slots} slot(s)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("DAGSTER_HOME", ".dagster_prod")))
    ap.add_argument("--gpu-slots", type=int, default=1, help="GPUs of the host: steps of the gpu pool at once")
    args = ap.parse_args(argv)
    init(args.home, args.gpu_slots)


if __name__ == "__main__":
    main(sys.argv[1:])
