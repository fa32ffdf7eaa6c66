"""`semid`, driven as a subprocess on a store with two versions of a code table (a fit, then an incremental run
after an edit): lookups both ways, prefixes, versions, lineage, the diff, export, and one-line errors with exit
codes a script can test."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ops.quality import QualityConfig, quality_report
from ops.retokenize import RetokenizeConfig, retokenize
from ops.serving import ServingIndex
from ops.tokenizers.pca_kmeans import PcaKMeans, PcaKMeansConfig
from storage.codes import CodeTableStore
from storage.serving import ServingIndexStore

SEMID = str(Path(sys.executable).with_name("semid"))  # the console script pyproject.toml declares
CFG = PcaKMeansConfig(length=2, k=4, d=2, seed=0)


def _write(tables, items, x, version):
    tok, result = retokenize(PcaKMeans, tables, tables.latest(), items, x, CFG, RetokenizeConfig(), {}, version)
    meta = {"schema_version": 2, "dataset": "ds", "tokenizer": "pk", "mode": "incremental", "churn": result.churn,
            "based_on": tables.latest(), "length": tok.length, "k": tok.k, "figures": result.figures,
            "created_at": version}
    tables.write_table(version, result.frame, meta, tok.save, retired=result.retired, migration=result.migration)
    tables.publish(version)
    return result.frame


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    tables = CodeTableStore(root, "ds", "pk")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 6)) * 10
    x = (centers[np.arange(30) % 8] + rng.normal(size=(30, 6)) * 0.1).astype(np.float32)
    items = pl.DataFrame({"item_id": [f"i{i:02d}" for i in range(30)], "content_hash": [f"h{i}" for i in range(30)]})
    v1 = _write(tables, items, x, "v1")
    now = pl.concat([items.filter(pl.col("item_id") != "i05"),
                     pl.DataFrame({"item_id": ["new"], "content_hash": ["n"]})])
    x2 = np.vstack([np.delete(x, 5, axis=0), x[[0]]])
    v2 = _write(tables, now, x2, "v2")
    report = quality_report(v2, 4, x2, None, QualityConfig())  # what id_quality/pk would write for v2
    pl.DataFrame([{"tokenizer": "pk", "version": "v2", **report.figures}]).write_parquet(
        root / "ds" / "id_quality__pk.parquet")
    index = ServingIndex.from_code_table(v2)  # what serving_index/pk writes for v2 (none for v1)
    ServingIndexStore(root, "ds", "pk").write_index("v2", index.prefixes, index.items, {})
    return root, v1, v2


def semid(root, *args, json_out=False):
    cmd = [SEMID, *args, "--root", str(root), *(["--json"] if json_out else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return done.returncode, (json.loads(done.stdout) if json_out and done.stdout else done.stdout), done.stderr


def test_help_lists_the_commands():
    done = subprocess.run([SEMID, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("tables", "versions", "lookup", "resolve", "prefix", "next", "info", "diff", "export"):
        assert command in done.stdout


def test_lookup_and_resolve_both_ways(store):
    root, v1, v2 = store
    sid = dict(zip(v2["item_id"], v2["semantic_id"]))
    code, out, _ = semid(root, "lookup", "ds", "pk", "i01", "new", json_out=True)
    assert code == 0 and out["version"] == "v2" and out["missing"] == []
    assert {r["item_id"]: r["semantic_id"] for r in out["found"]} == {"i01": sid["i01"], "new": sid["new"]}
    code, out, _ = semid(root, "resolve", "ds", "pk", sid["i01"], json_out=True)
    assert code == 0 and out["found"] == [{"semantic_id": sid["i01"], "item_id": "i01"}]
    # the removed item's ID is retired, and says so; an ID never issued is missing
    old_i05 = v1.filter(pl.col("item_id") == "i05")["semantic_id"].item()
    code, out, err = semid(root, "resolve", "ds", "pk", old_i05, "3-3/99", json_out=True)
    assert code == 1 and out["missing"] == ["3-3/99"] and "3-3/99" in err
    assert out["retired"][0]["item_id"] == "i05" and out["retired"][0]["retired_in"] == "v2"
    code, out, err = semid(root, "lookup", "ds", "pk", "i05")  # gone from v2, there in v1
    assert code == 1 and "i05" in err
    code, out, _ = semid(root, "lookup", "ds", "pk", "i05", "--version", "v1", json_out=True)
    assert code == 0 and out["found"][0]["semantic_id"] == old_i05


def test_prefix_versions_info_diff(store):
    root, v1, v2 = store
    first = v2.filter(pl.col("item_id") == "i00")["codes"].item()[0]
    code, out, _ = semid(root, "prefix", "ds", "pk", str(first), "--limit", "0", json_out=True)
    expected = sorted(v2.filter(pl.col("codes").arr.get(0) == first)["item_id"])
    assert code == 0 and sorted(r["item_id"] for r in out["rows"]) == expected and out["items"] == len(expected)
    code, out, _ = semid(root, "versions", "ds", "pk", json_out=True)
    assert code == 0 and [r["version"] for r in out] == ["v1", "v2"] and [r["latest"] for r in out] == [False, True]
    code, out, _ = semid(root, "info", "ds", "pk", json_out=True)
    assert code == 0 and out["version"] == "v2" and out["latest"] and out["churn"]["added"] == 1
    assert out["length"] == 2 and out["rows"] == 30 and out["based_on"] == "v1"
    assert out["id_quality"]["version"] == "v2" and 0 <= out["id_quality"]["neighbour_preservation"] <= 1
    code, out, _ = semid(root, "info", "ds", "pk", "--version", "v1", json_out=True)
    assert code == 0 and out["id_quality"] is None  # the report is of another version
    code, out, _ = semid(root, "diff", "ds", "pk", "v1", "v2", json_out=True)
    assert code == 0 and out["churn"] == {"unchanged": 29, "changed": 0, "added": 1, "removed": 1, "moved": 0}
    assert {r["item_id"]: r["change"] for r in out["rows"]} == {"i05": "removed", "new": "added"}
    code, out, _ = semid(root, "diff", "ds", "pk", "v2", "v1", json_out=True)  # not made from each other: computed
    assert code == 0 and {r["item_id"]: r["change"] for r in out["rows"]} == {"i05": "added", "new": "removed"}
    code, text, _ = semid(root, "tables", "ds")
    assert code == 0 and "pk" in text and "v2" in text


def test_export_writes_a_version_that_plain_pyarrow_reads(store, tmp_path):
    import pyarrow.parquet as pq

    root, v1, _ = store
    code, out, _ = semid(root, "export", "ds", "pk", str(tmp_path / "out"), "--version", "v1", json_out=True)
    assert code == 0 and set(out["files"]) >= {"codes.parquet", "MANIFEST.json", "id_migration.parquet"}
    assert pq.read_table(tmp_path / "out" / "codes.parquet").column("semantic_id").to_pylist() == v1[
        "semantic_id"].to_list()
    code, _, err = semid(root, "export", "ds", "pk", str(tmp_path / "out"))  # not into a non-empty directory
    assert code == 2 and "not empty" in err


def test_next_answers_from_the_serving_index(store, tmp_path):
    root, _, v2 = store
    first = sorted({int(c[0]) for c in v2["codes"].to_list()})
    code, out, _ = semid(root, "next", "ds", "pk", json_out=True)
    assert code == 0 and out["version"] == "v2" and out["allowed_next"] == first
    # the items under one first code, all excluded: that code is no longer allowed
    under = [i for i, c in zip(v2["item_id"], v2["codes"].to_list()) if c[0] == first[0]]
    code, out, _ = semid(root, "next", "ds", "pk", "--exclude", *under, json_out=True)
    assert code == 0 and out["allowed_next"] == first[1:] and out["excluded"] == len(under)
    row = v2.row(0, named=True)  # at the last depth: the dedup values, each naming its item
    prefix = "-".join(map(str, row["codes"]))
    code, out, _ = semid(root, "next", "ds", "pk", prefix, json_out=True)
    assert code == 0 and row["item_id"] in out["items"] and len(out["items"]) == len(out["allowed_next"])
    code, _, err = semid(root, "next", "ds", "pk", "9-9")
    assert code == 1 and "9-9 is not a prefix" in err
    code, _, err = semid(root, "next", "ds", "pk", "--version", "v1")
    assert code == 2 and "no serving index for pk version v1" in err
    code, out, _ = semid(root, "export", "ds", "pk", str(tmp_path / "out"), json_out=True)  # v2: with its index
    assert code == 0 and {"serving_index/prefixes.parquet", "serving_index/items.parquet"} <= set(out["files"])


@pytest.mark.parametrize("args,needle", [
    (("lookup", "nope", "pk", "i01"), "unknown dataset 'nope'"),
    (("lookup", "ds", "nope", "i01"), "unknown tokenizer 'nope' for dataset 'ds' (known: pk)"),
    (("lookup", "ds", "pk", "i01", "--version", "v9"), "unknown version 'v9'"),
    (("lookup", "ds", "../x", "i01"), "tokenizer"),
    (("prefix", "ds", "pk", "a-b"), "a prefix is codes joined by '-'"),
    (("prefix", "ds", "pk", "1-2-3"), "the prefix has 3 codes"),
])
def test_errors_are_one_line_with_exit_code_2(store, args, needle):
    root, _, _ = store
    code, out, err = semid(root, *args)
    assert code == 2 and out == "" and needle in err and err.startswith("semid: error:")
    assert len(err.strip().splitlines()) == 1
