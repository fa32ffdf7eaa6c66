"""`semid`: the code tables for people and scripts, read from the store alone (no Dagster instance, no models).

    semid tables DATASET                          tokenizers with a code table: latest version, items, L, K
    semid versions DATASET TOKENIZER              every version: created, mode, items, churn, latest
    semid lookup DATASET TOKENIZER ITEM_ID...     item id -> semantic ID
    semid resolve DATASET TOKENIZER SID...        semantic ID -> item id (a retired ID says when it was retired)
    semid prefix DATASET TOKENIZER PREFIX         items whose codes start with PREFIX (e.g. 12-200)
    semid next DATASET TOKENIZER [PREFIX]         the codes that may follow PREFIX (the serving index's
                                                  allowed_next; --exclude ITEM_ID... leaves those items out)
    semid info DATASET TOKENIZER                  lineage and quality figures of a version
    semid diff DATASET TOKENIZER OLD NEW          which IDs moved between two versions, and the churn
    semid export DATASET TOKENIZER DIR            a version's files (codes, retired, id_migration, manifest, and
                                                  its serving index under serving_index/) to DIR

Every command takes `--version V` (default: the published `latest`; `diff` names both), `--root` (default
$SEMID_STORAGE_ROOT, else data/store) and `--json` (one JSON document on stdout). Exit codes: 0 found, 1 an id,
semantic ID or prefix not found (the others are still printed), 2 a usage error or an unknown dataset, tokenizer or
version (one line on stderr naming what is known).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn, cast

import polars as pl

from ops.retokenize import migration
from ops.serving import ServingIndex
from storage.codes import MIGRATION_FILE, RETIRED_FILE, CodeTableStore
from storage.paths import check_name
from storage.serving import ServingIndexStore

NOT_FOUND, USAGE = 1, 2


class CliError(Exception):
    """A one-line refusal with its exit code."""

    def __init__(self, message: str, code: int = USAGE):
        super().__init__(message)
        self.code = code


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root or os.environ.get("SEMID_STORAGE_ROOT") or "data/store").expanduser()


def _known(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if directory.is_dir() else []


def _require_dataset(root: Path, dataset: str) -> None:
    datasets = [d for d in _known(root) if (root / d / "code_tables").is_dir()]
    if dataset not in datasets:
        raise CliError(f"unknown dataset {dataset!r} under {root} (with code tables: {', '.join(datasets) or 'none'})")


def _tables(args: argparse.Namespace) -> CodeTableStore:
    root = _root(args)
    try:
        check_name("dataset", args.dataset)
        check_name("tokenizer", args.tokenizer)
    except ValueError as e:
        raise CliError(str(e)) from None
    _require_dataset(root, args.dataset)
    tokenizers = _known(root / args.dataset / "code_tables")
    if args.tokenizer not in tokenizers:
        raise CliError(f"unknown tokenizer {args.tokenizer!r} for dataset {args.dataset!r} (known: "
                       f"{', '.join(tokenizers) or 'none'})")
    return CodeTableStore(root, args.dataset, args.tokenizer)


def _version(tables: CodeTableStore, asked: str | None) -> str:
    versions = tables.versions()
    if asked is None:
        latest = tables.latest()
        if latest is None:
            raise CliError(f"{tables.dir} has no published version yet (versions: {', '.join(versions) or 'none'})")
        return latest
    if asked == "latest":
        return _version(tables, None)
    if asked not in versions:
        raise CliError(f"unknown version {asked!r} (versions: {', '.join(versions[-5:]) or 'none'}"
                       f"{', …' if len(versions) > 5 else ''})")
    return asked


def _emit(args: argparse.Namespace, document: Any, frame: pl.DataFrame | None = None) -> None:
    if args.json:
        print(json.dumps(document, indent=2, default=str))
    elif frame is not None:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, tbl_width_chars=200, fmt_table_cell_list_len=-1,
                       tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
            print(frame)
    else:
        for key, value in document.items():
            print(f"{key}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}")


def cmd_tables(args: argparse.Namespace) -> int:
    root = _root(args)
    _require_dataset(root, args.dataset)
    base = root / args.dataset / "code_tables"
    rows = []
    for name in _known(base):
        tables = CodeTableStore(root, args.dataset, name)
        latest = tables.latest()
        meta = tables.manifest(latest)["metadata"] if latest else {}
        rows.append({"tokenizer": name, "latest": latest, "versions": len(tables.versions()),
                     "items": meta.get("rows"), "length": meta.get("length"), "k": meta.get("k")})
    _emit(args, rows, pl.DataFrame(rows) if rows else pl.DataFrame())
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    frame = _tables(args).versions_table()
    _emit(args, frame.to_dicts(), frame.drop("upstream"))
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    tables = _tables(args)
    version = _version(tables, args.version)
    codes = tables.read(version).select("item_id", "semantic_id", "codes")
    found = codes.filter(pl.col("item_id").is_in(args.ids))
    missing = [i for i in args.ids if i not in set(found["item_id"])]
    rows = [{"item_id": r["item_id"], "semantic_id": r["semantic_id"], "codes": list(r["codes"])}
            for r in found.iter_rows(named=True)]
    _emit(args, {"version": version, "found": rows, "missing": missing},
          found.with_columns(pl.col("codes").cast(pl.List(pl.Int32))))
    if missing:
        print(f"semid: not in {version}: {', '.join(missing)}", file=sys.stderr)
    return NOT_FOUND if missing else 0


def cmd_resolve(args: argparse.Namespace) -> int:
    tables = _tables(args)
    version = _version(tables, args.version)
    codes = tables.read(version).select("semantic_id", "item_id")
    found = codes.filter(pl.col("semantic_id").is_in(args.sids))
    retired = tables.read_retired(version)
    gone = (retired.filter(pl.col("semantic_id").is_in(args.sids)).select("semantic_id", "item_id", "retired_in",
                                                                          "retire_reason")
            if retired is not None else pl.DataFrame())
    missing = [s for s in args.sids if s not in set(found["semantic_id"]) and
               (gone.is_empty() or s not in set(gone["semantic_id"]))]
    _emit(args, {"version": version, "found": found.to_dicts(), "retired": gone.to_dicts(), "missing": missing},
          found)
    if not args.json and not gone.is_empty():
        for r in gone.iter_rows(named=True):
            print(f"{r['semantic_id']}: retired in {r['retired_in']} ({r['retire_reason']}), was {r['item_id']}")
    if missing:
        print(f"semid: no item has these IDs in {version}: {', '.join(missing)}", file=sys.stderr)
    return NOT_FOUND if missing or not gone.is_empty() else 0


def _prefix_codes(prefix: str) -> list[int]:
    try:
        return [int(part) for part in prefix.replace("/", "-").strip("-").split("-") if part != ""]
    except ValueError:
        raise CliError(f"a prefix is codes joined by '-', e.g. 12-200; got {prefix!r}") from None


def cmd_prefix(args: argparse.Namespace) -> int:
    tables = _tables(args)
    version = _version(tables, args.version)
    want = _prefix_codes(args.prefix)
    codes = tables.read(version).select("item_id", "semantic_id", "codes")
    length = cast(pl.Array, codes["codes"].dtype).size
    if len(want) > length:
        raise CliError(f"the prefix has {len(want)} codes; this table's IDs have {length}")
    match = codes.filter(pl.all_horizontal([pl.col("codes").arr.get(i) == c for i, c in enumerate(want)])
                         if want else pl.lit(True)).drop("codes")
    shown = match.head(args.limit) if args.limit else match
    _emit(args, {"version": version, "prefix": want, "items": match.height, "rows": shown.to_dicts()}, shown)
    if not args.json:
        print(f"{match.height} items under {'-'.join(map(str, want)) or '(all)'} in {version}")
    return 0 if match.height else NOT_FOUND


def _serving(args: argparse.Namespace, version: str) -> ServingIndexStore:
    indexes = ServingIndexStore(_root(args), args.dataset, args.tokenizer)
    if version not in indexes.versions():
        raise CliError(f"no serving index for {args.tokenizer} version {version} of {args.dataset}: materialize "
                       f"serving_index/{args.tokenizer} (built for: {', '.join(indexes.versions()[-3:]) or 'none'})")
    return indexes


def cmd_next(args: argparse.Namespace) -> int:
    tables = _tables(args)
    version = _version(tables, args.version)
    index = ServingIndex.from_tables(*_serving(args, version).read(version))
    want = _prefix_codes(args.prefix)
    try:
        allowed = index.allowed_next(want, args.exclude)
    except KeyError as e:
        print(f"semid: {e.args[0]}", file=sys.stderr)
        _emit(args, {"version": version, "prefix": want, "allowed_next": None})
        return NOT_FOUND
    last = len(want) == index.depth - 1  # the next value is the dedup index: each code is one item
    _emit(args, {"version": version, "prefix": want, "allowed_next": allowed, "excluded": len(args.exclude),
                 **({"items": [index.item_of([*want, c]) for c in allowed]} if last else {})})
    return 0 if allowed else NOT_FOUND


def cmd_info(args: argparse.Namespace) -> int:
    tables = _tables(args)
    version = _version(tables, args.version)
    meta = tables.manifest(version)["metadata"]
    keep = ("dataset", "tokenizer", "created_at", "run_id", "mode", "based_on", "code_version", "schema_version",
            "length", "k", "rows", "retired", "churn", "config", "sources", "figures", "warnings")
    quality = _root(args) / args.dataset / f"id_quality__{args.tokenizer}.parquet"  # assets/quality.py
    report = pl.read_parquet(quality).to_dicts()[0] if quality.is_file() else None
    _emit(args, {"version": version, "latest": version == tables.latest(),
                 **{k: meta[k] for k in keep if k in meta},
                 "id_quality": report if report is not None and report.get("version") == version else None})
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    tables = _tables(args)
    old, new = _version(tables, args.old), _version(tables, args.new)
    newer = tables.read(new)
    stored = tables.read_migration(new)
    if stored is not None and tables.manifest(new)["metadata"].get("based_on") == old:
        moves = stored  # the version was made from `old`: its own id_migration
    else:
        moves = migration(newer.select("item_id", "content_hash"), tables.read(old), newer)
    counts = {kind: int(moves.filter(pl.col("change") == kind).height)
              for kind in ("unchanged", "changed", "added", "removed")}
    counts["moved"] = int(moves["moved"].sum())
    moved = moves.filter(pl.col("moved") | pl.col("change").is_in(["added", "removed"]))
    shown = moved.head(args.limit) if args.limit else moved
    _emit(args, {"old": old, "new": new, "churn": counts, "rows": (moved if args.json else shown).to_dicts()},
          shown)
    if not args.json:
        print(f"{old} -> {new}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    tables = _tables(args)
    version = _version(tables, args.version)
    target = Path(args.to).expanduser()
    if target.exists() and any(target.iterdir()):
        raise CliError(f"{target} exists and is not empty: export writes into a new or empty directory")
    target.mkdir(parents=True, exist_ok=True)
    source = tables.path(version)
    written = []
    for name in ("codes.parquet", RETIRED_FILE, MIGRATION_FILE, "MANIFEST.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
            written.append(name)
    indexes = ServingIndexStore(_root(args), args.dataset, args.tokenizer)
    if version in indexes.versions():  # the serving index of this version, where it was built
        shutil.copytree(indexes.path(version), target / "serving_index")
        written += [f"serving_index/{p.name}" for p in sorted((target / "serving_index").iterdir())]
    _emit(args, {"version": version, "to": str(target), "files": written})
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="semid", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", help="the store's root (default $SEMID_STORAGE_ROOT, else data/store)")
    common.add_argument("--json", action="store_true", help="one JSON document on stdout")
    sub = ap.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Any, help_: str, *, table: bool = True, version: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.add_argument("dataset")
        if table:
            p.add_argument("tokenizer")
        if version:
            p.add_argument("--version", help="a version name (default: the published latest)")
        p.set_defaults(fn=fn)
        return p

    add("tables", cmd_tables, "tokenizers with a code table: latest version, items, L, K", table=False,
        version=False)
    add("versions", cmd_versions, "every version: created, mode, items, churn, latest", version=False)
    add("lookup", cmd_lookup, "item id -> semantic ID").add_argument("ids", nargs="+", metavar="ITEM_ID")
    add("resolve", cmd_resolve, "semantic ID -> item id").add_argument("sids", nargs="+", metavar="SEMANTIC_ID")
    p = add("prefix", cmd_prefix, "items whose codes start with PREFIX (codes joined by '-')")
    p.add_argument("prefix")
    p.add_argument("--limit", type=int, default=50, help="rows shown (0: all)")
    p = add("next", cmd_next, "the codes that may follow PREFIX (codes joined by '-'; none: the first code)")
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--exclude", nargs="*", default=[], metavar="ITEM_ID", help="items that may not be produced")
    add("info", cmd_info, "lineage and quality figures of a version")
    p = add("diff", cmd_diff, "which IDs moved between two versions", version=False)
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--limit", type=int, default=50, help="rows shown (0: all; --json gives all)")
    add("export", cmd_export, "copy a version's files to a new directory").add_argument("to", metavar="DIR")
    return ap


def fail(message: str, code: int) -> NoReturn:
    print(f"semid: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except CliError as e:
        fail(str(e), e.code)
    except BrokenPipeError:  # `semid ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
