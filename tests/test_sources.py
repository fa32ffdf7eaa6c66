"""A new raw-data source is one module with its loader and `SOURCE` declaration plus one `register(...)`: the
dataset registry, ingestion, the impressions rule and the sample generator follow from the declaration, and no
other file names a source."""
import re
from pathlib import Path

import polars as pl
import pytest

from ops import datasets, ingest, sample
from ops.ingest.common import FileAccount, IngestResult, ItemBuilder, Quarantine, find_file, iter_lines
from ops.ingest.source import Source
from storage.schemas import INTERACTION_CORE

ROOT = Path(__file__).resolve().parents[1]


# --- a toy source, declared in the few lines a contributor writes -----------------------------------------------------
def _load_toy(raw_dir: Path, spec, workdir) -> IngestResult:
    """items.tsv: id, title, genre; events.tsv: user, item, unix time."""
    items, quarantine = ItemBuilder(spec.name, ("title", "genre")), Quarantine()
    path = find_file(raw_dir, ["items.tsv"], "toy items")
    item_account = FileAccount(path.name, "line", "items")
    for line, text in iter_lines(path, table=True):
        item_account.rows_in += 1
        item_id, title, genre = text.split("\t")
        items.add(item_id, (title, genre), (path.name, line), text, quarantine, item_account)
    path = find_file(raw_dir, ["events.tsv"], "toy events")
    account = FileAccount(path.name, "line", "interactions")
    rows = []
    for line, text in iter_lines(path, table=True):
        account.rows_in += 1
        user, item, ts = text.split("\t")
        if item not in items:
            quarantine.add(path.name, line, f"unknown_item: {item}", text, account)
            continue
        account.kept += 1
        rows.append({"user_id": user, "item_id": item, "timestamp": int(ts), "event": "view", "seq": len(rows)})
    return IngestResult(items.frame(), pl.DataFrame(rows, schema=INTERACTION_CORE), quarantine.frame(),
                        [item_account, account])


def _toy_sample(out_dir: Path, size, seed: int = 0, corrupt: bool = False, genres: int = 2) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "items.tsv").write_text("".join(f"t{i}\tTitle {i}\tgenre {i % genres}\n" for i in range(6)))
    (out_dir / "events.tsv").write_text("".join(f"u{u}\tt{(u + k) % 6}\t{1000 + 10 * k}\n"
                                                for u in range(4) for k in range(3)) + "u0\tnope\t2000\n")
    return out_dir


TOY = Source("toy", ("title", "genre"), content_attributes=1, load=_load_toy, generate_sample=_toy_sample,
             impressions="sampled", sample_options=lambda spec: {"genres": int(spec.options.get("genres", 2))})


@pytest.fixture
def toy():
    ingest.register(TOY)
    yield TOY
    ingest.SOURCES.pop("toy")


def test_a_registered_source_is_a_dataset_kind_that_ingests_and_generates_its_sample(toy, tmp_path):
    registry = tmp_path / "datasets.toml"
    registry.write_text('[my_toys]\nsource = "toy"\nraw_dir = "toys"\ngenres = 3\n')
    spec = datasets.load_registry(registry)["my_toys"]
    assert (spec.attributes, spec.content_attributes, spec.impressions) == (("title", "genre"), 1, "sampled")
    raw = sample.generate("toy", spec.raw_path(tmp_path / "raw"), "tiny", **spec.sample_options())
    assert (raw / "items.tsv").read_text().count("genre 2") == 2  # the dataset's option reached the generator
    result = ingest.ingest(spec, tmp_path / "raw")
    assert result.items["item_id"].to_list() == [f"t{i}" for i in range(6)]
    assert result.interactions.height == 12 and result.quarantine["reason"].to_list() == ["unknown_item"]
    assert all(a.balanced for a in result.accounts)


def test_an_unknown_source_or_a_missing_required_field_is_refused_when_the_registry_loads(tmp_path):
    registry = tmp_path / "datasets.toml"
    registry.write_text('[x]\nsource = "nope"\nraw_dir = "x"\n')
    with pytest.raises(ValueError, match="unknown source 'nope'; registered: mind, amazon, hm"):
        datasets.load_registry(registry)
    registry.write_text('[y]\nsource = "amazon"\nraw_dir = "y"\n')
    with pytest.raises(ValueError, match="a amazon dataset needs category"):
        datasets.load_registry(registry)


def test_no_module_outside_the_sources_names_a_source():
    """The declaration is the one place: no `source == "mind"` dispatch anywhere else."""
    pattern = re.compile(r"""\.source\s*[!=]=\s*["']|spec_source\s*==""")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for package in ("ops", "assets", "pipeline")
                 for path in (ROOT / package).rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
