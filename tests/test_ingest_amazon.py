import json

import polars as pl
import pytest

from ops.ingest.amazon import load_amazon, parse_meta_line
from ops.ingest.common import IngestError

META_2014 = [
    # Python-literal lines: single quotes, which JSON cannot parse
    "{'asin': 'B001', 'title': \"Kid's Shampoo\", 'price': 3.5, 'categories': [['Beauty', 'Hair Care'], "
    "['Beauty', 'Bath']], 'brand': 'Aurel', 'description': 'Gentle shampoo.', 'related': {'also_bought': ['B002']}}",
    "{'asin': 'B002', 'categories': [['Beauty', 'Makeup']], 'salesRank': {'Beauty': 10}}",  # no title: still text
    "{'asin': 'B003', 'title': 'Never reviewed', 'categories': [['Beauty']]}",  # no review: filtered, counted
    "{'asin': 'B004', 'title': 'cut off",  # reviewed but unparsable -> quarantine, its reviews too
]
REVIEWS_2014 = [
    json.dumps({"reviewerID": "A1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000}),
    json.dumps({"reviewerID": "A1", "asin": "B002", "overall": 4.0, "unixReviewTime": 1300000100}),
    '{"reviewerID": "A2", "asin": "B001", "overall": 5.0,',  # bad JSON
    json.dumps({"reviewerID": "A2", "asin": "B001", "overall": 3.0}),  # missing unixReviewTime
    json.dumps({"reviewerID": "A3", "asin": "B004", "overall": 3.0, "unixReviewTime": 1300000000}),
    json.dumps({"reviewerID": "A3", "asin": "B999", "overall": 3.0, "unixReviewTime": 1300000000}),
]


def test_python_literal_meta_line_is_not_json():
    line = META_2014[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    meta = parse_meta_line(line, python_literal=True)
    assert meta["title"] == "Kid's Shampoo"


def test_amazon_2014(tmp_path, lines_writer):
    lines_writer(tmp_path / "reviews_Beauty_5.json", REVIEWS_2014, gz=True)
    lines_writer(tmp_path / "meta_Beauty.json", META_2014)
    res = load_amazon(tmp_path, "t", "Beauty", "2014")
    items = res.items.sort("item_id")
    assert items["item_id"].to_list() == ["B001", "B002"]
    assert items["categories"][0] == "Beauty > Hair Care | Beauty > Bath"
    assert items["title"][1] == "" and items["categories"][1] == "Beauty > Makeup"
    q = res.quarantine
    by_line = dict(zip(zip(q["source_file"], q["line"]), q["reason"]))
    assert by_line[("reviews_Beauty_5.json.gz", 3)].startswith("bad JSON")
    assert by_line[("reviews_Beauty_5.json.gz", 4)] == "missing field(s) unixReviewTime"
    assert by_line[("reviews_Beauty_5.json.gz", 5)].startswith("unknown item: B004")
    assert by_line[("reviews_Beauty_5.json.gz", 6)].startswith("unknown item: B999")
    assert by_line[("meta_Beauty.json", 4)].startswith("not a Python-literal dict")
    # raw text of a record rejected after the whole file was read is fetched back from the file
    assert json.loads(q.filter(pl.col("line") == 6)["raw"].item())["asin"] == "B999"
    inter = res.interactions
    assert inter.select("user_id", "item_id", "timestamp", "rating").rows() == [
        ("A1", "B001", 1300000000, 5.0), ("A1", "B002", 1300000100, 4.0)]
    meta_acc = next(a for a in res.accounts if a.source_file == "meta_Beauty.json")
    assert meta_acc.filtered["item has no kept review"] == 1
    assert all(a.balanced for a in res.accounts)


def test_amazon_2018(tmp_path, lines_writer):
    lines_writer(tmp_path / "Beauty_5.json", [
        json.dumps({"overall": 5.0, "verified": True, "reviewerID": "A1", "asin": "B1", "unixReviewTime": 1500000000}),
        json.dumps({"overall": 2.0, "verified": True, "reviewerID": "A2", "asin": "B1", "unixReviewTime": 1500000500}),
    ])
    lines_writer(tmp_path / "meta_Beauty.json", [json.dumps(
        {"category": ["Beauty", "Skin"], "description": ["Soft", "cream."], "title": "Cream", "brand": "X",
         "asin": "B1"})])
    res = load_amazon(tmp_path, "t", "Beauty", "2018")
    assert res.items.row(0, named=True)["description"] == "Soft cream."
    assert res.items.row(0, named=True)["categories"] == "Beauty > Skin"
    assert res.interactions["user_id"].to_list() == ["A1", "A2"]


def test_amazon_2023_millisecond_timestamps_and_parent_asin(tmp_path, lines_writer):
    lines_writer(tmp_path / "All_Beauty.jsonl", [json.dumps(
        {"rating": 4.0, "asin": "B1-RED", "parent_asin": "P1", "user_id": "U1", "timestamp": 1588687728923})])
    lines_writer(tmp_path / "meta_All_Beauty.jsonl", [json.dumps(
        {"main_category": "All Beauty", "title": "Lip oil", "description": [], "store": "Brand",
         "categories": [], "parent_asin": "P1"})])
    res = load_amazon(tmp_path, "t", "All_Beauty", "2023")
    assert res.interactions.row(0, named=True)["timestamp"] == 1588687728
    assert res.interactions.row(0, named=True)["item_id"] == "P1"
    item = res.items.row(0, named=True)
    assert (item["title"], item["brand"], item["categories"]) == ("Lip oil", "Brand", "All Beauty")


def test_amazon_missing_files_and_wrong_format(tmp_path, lines_writer):
    with pytest.raises(IngestError, match=r"Amazon 2014 reviews \(Beauty\): no file reviews_Beauty_5.json"):
        load_amazon(tmp_path, "t", "Beauty", "2014")
    lines_writer(tmp_path / "reviews_Beauty_5.json", ["user,item,rating"] + ["a,b,5"] * 25)
    lines_writer(tmp_path / "meta_Beauty.json", META_2014)
    with pytest.raises(IngestError, match=r"reviews_Beauty_5.json line 1: not in the expected format"):
        load_amazon(tmp_path, "t", "Beauty", "2014")
    with pytest.raises(IngestError, match="unknown release"):
        load_amazon(tmp_path, "t", "Beauty", "2015")
