import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

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
    detail = dict(zip(zip(q["source_file"], q["line"]), q["detail"]))
    assert by_line[("reviews_Beauty_5.json.gz", 5)] == "unknown item, no valid meta line"
    assert detail[("reviews_Beauty_5.json.gz", 5)] == "B004" and detail[("reviews_Beauty_5.json.gz", 6)] == "B999"
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


@pytest.mark.parametrize("tree", [False, True])  # files side by side, or as the release's download lays them out
def test_amazon_2023_millisecond_timestamps_and_parent_asin(tmp_path, lines_writer, tree):
    lines_writer(tmp_path / ("review_categories" if tree else "") / "All_Beauty.jsonl", [json.dumps(
        {"rating": 4.0, "asin": "B1-RED", "parent_asin": "P1", "user_id": "U1", "timestamp": 1588687728923})],
        gz=tree)
    lines_writer(tmp_path / ("meta_categories" if tree else "") / "meta_All_Beauty.jsonl", [json.dumps(
        {"main_category": "All Beauty", "title": "Lip oil", "description": [], "store": "Brand",
         "categories": [], "parent_asin": "P1"})])
    res = load_amazon(tmp_path, "t", "All_Beauty", "2023")
    assert res.accounts[0].source_file == ("review_categories/All_Beauty.jsonl.gz" if tree else "All_Beauty.jsonl")
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


# --- the vectorised reviews reader against the line-by-line specification --------------------------------------

def _edge_lines():
    """Reviews lines (2014 keys) that polars' JSON reading and json.loads could see differently, with plain ones
    in between so that blocks mix both paths."""
    def rec(**kw):
        base = {"reviewerID": "A1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000}
        base.update(kw)
        return json.dumps(base)

    return [
        rec(), rec(reviewerID="A2", summary="caf\u00e9 \u2019ok\u2019"),  # non-ASCII escaped (json.dumps default)
        json.dumps({"reviewerID": "A3", "asin": "B002", "overall": 4, "unixReviewTime": 1300000001},
                   ensure_ascii=False) + "  ",  # int rating, trailing spaces
        '\t{"reviewerID":"A4",\t"asin" : "B001","overall":3.0,"unixReviewTime":1.3e9}',  # tabs, float time
        '{"reviewerID": "A5", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000, "reviewerID": "A6"}',
        '{"reviewerID": "A7", "\\u0061sin": "B002", "asin": "B001", "overall": 5.0, "unixReviewTime": 1}',
        '{"reviewerID": 12, "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000}',  # number id
        '{"reviewerID": 1.0, "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000}',  # str(1.0) = '1.0'
        '{"reviewerID": true, "asin": "B001", "overall": true, "unixReviewTime": true}',  # 'True', 1.0, 1
        '{"reviewerID": "A8", "asin": "B001", "overall": "4.0", "unixReviewTime": "1300000000"}',  # strings
        '{"reviewerID": "A9", "asin": "B001", "overall": 5.0, "unixReviewTime": 9007199254740993}',  # > 2^53
        '{"reviewerID": "A10", "asin": "B001", "overall": 5.0, "unixReviewTime": -1500.7}',
        '{"reviewerID": "A11", "asin": "B001", "overall": NaN, "unixReviewTime": 1300000000}',
        '{"reviewerID": "A12", "asin": "B001", "overall": 1e999, "unixReviewTime": 1300000000}',
        '{"reviewerID": "A12", "asin": "B001", "overall": 5.0, "unixReviewTime": -1e999}',
        '{"reviewerID": "", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000}',  # empty id
        '{"reviewerID": "A13", "asin": null, "overall": 5.0, "unixReviewTime": 1300000000}',
        '{"reviewerID": "A14", "asin": "B001", "overall": 5.0}',  # missing time
        '{"reviewerID": "A\\u0031\\ud83d\\ude00", "asin": "B001", "overall": 2.0, "unixReviewTime": 1300000000}',
        '{"reviewerID": "A15", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000, '
        '"related": {"asin": "B002"}}',  # a nested key of the same name
        '{"summary": "asin", "reviewerID": "A16", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000}',
        '{"reviewerID": "A 17 \\"q\\"", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000}',
        '{"reviewerID": "\u00c5ngstr\u00f6m", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000}',
        '[1, 2]', 'null', '"a string"', '17',
        '{"reviewerID": "A18", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000} trailing',
        '{"reviewerID": "A19", "asin": "B001", "overall": 5.0,',  # cut off
        "{'reviewerID': 'A20', 'asin': 'B001', 'overall': 5.0, 'unixReviewTime': 1300000000}",  # not JSON
        '{"reviewerID": "A21", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000, "t": "a\tb"}',
        '{"reviewerID": "A\\ud800", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000, "s": "\\udc00"}',
        '{"reviewerID": "A25", "asin": "B001", "overall": 5.0, "unixReviewTime": 1e300}',
        "", "   ", "\x1c", "\u3000",  # blank for Python (the \x1c and \u3000 ones too): not records
        '\ufeff{"reviewerID": "A22", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000}',  # BOM
        rec(reviewerID="A23", reviewText="x" * 3000),  # longer than a test block
        rec(reviewerID="A24"),
    ]


def _compare(path, version="2014", category="Beauty"):
    from ops.ingest.amazon import _read_reviews, release
    from ops.ingest.common import Quarantine
    from tests.reference_amazon import read_reviews_line_by_line

    rel_ = release(version, category)
    q_fast, q_ref = Quarantine(), Quarantine()
    acc_fast, fast = _read_reviews(path, path.name, rel_, q_fast)
    acc_ref, ref = read_reviews_line_by_line(path, path.name, rel_, q_ref)
    assert_frame_equal(fast, ref)
    assert q_fast.frame().rows() == q_ref.frame().rows()
    assert (acc_fast.rows_in, acc_fast.kept, acc_fast.quarantined, dict(acc_fast.filtered)) == (
        acc_ref.rows_in, acc_ref.kept, acc_ref.quarantined, dict(acc_ref.filtered))
    assert acc_fast.balanced
    return fast, q_fast.frame()


@pytest.mark.parametrize("block", [256, 1 << 20])
@pytest.mark.parametrize("gz", [False, True])
def test_vectorised_reviews_equal_line_by_line_on_edge_cases(tmp_path, lines_writer, monkeypatch, block, gz):
    import ops.ingest.amazon as amazon

    monkeypatch.setattr(amazon, "BLOCK_BYTES", block)  # 256: many blocks, lines longer than one
    path = lines_writer(tmp_path / "reviews_Beauty_5.json", _edge_lines() * 3, gz=gz)
    kept, quarantine = _compare(path)
    # spot checks of what the specification says (so that both cannot be wrong together)
    users = kept["user_id"].to_list()
    assert "A6" in users and "A5" not in users  # json.loads keeps a duplicate key's last value
    assert {"12", "1.0", "True", "A8", "A 17 \"q\"", "\u00c5ngstr\u00f6m", "A1\U0001F600", "A\ufffd"} <= set(users)
    assert kept.filter(pl.col("user_id") == "A9")["timestamp"][0] == 9007199254740992  # through float
    assert kept.filter(pl.col("user_id") == "A10")["timestamp"][0] == -1500
    assert kept.filter(pl.col("user_id") == "A4")["timestamp"][0] == 1300000000
    assert kept.filter(pl.col("user_id") == "A7")["item_id"][0] == "B001"
    reasons = quarantine["reason"].to_list()
    assert sum(r.startswith("bad JSON") for r in reasons) == 3 * 9
    # NaN, inf, 1e300 (beyond Int64); "4.0" is fine
    assert sum(r.startswith("bad timestamp or rating") for r in reasons) == 3 * 4
    assert kept["line"].is_sorted() and kept["line"].n_unique() == kept.height


def test_vectorised_reviews_certify_valid_json_lines_in_one_block(tmp_path, lines_writer):
    """Only the lines json.loads accepts, in one block that polars reads: every odd line has to be told apart
    by the plain-line test itself (duplicate or escaped keys, ids that are not strings, times beyond 2^53...)."""
    from ops.ingest.amazon import _vector_block, release

    def valid(line):
        try:
            json.loads(line)
            return True
        except ValueError:
            return False

    # (NaN, 1e999, a lone surrogate, a rating or time of another JSON type, lines that are not objects: polars'
    # NDJSON reader rejects them and their block goes line by line, tested above)
    lines = [line for line in _edge_lines() if valid(line) and line.strip()[0] == "{" and not any(
        s in line for s in ("NaN", "e999", "e300", '"4.0"', "\\ud800", ": true", "1.3e9", "-1500.7"))]
    path = lines_writer(tmp_path / "reviews_Beauty_5.json", lines)
    frame, count = _vector_block(path.read_bytes(), release("2014", "Beauty"))
    assert count == len(lines) and frame.height == len(lines)
    plain = dict(zip(frame["line"] + 1, frame["plain"]))
    assert sum(plain.values()) >= 6 and not all(plain.values())
    kept, _ = _compare(path)
    assert kept.height == len(lines) - 3  # empty id, null asin, no time


def test_vectorised_reviews_lines_that_polars_would_join(tmp_path, lines_writer):
    """A line cut inside a string with the rest of it on the next line, and a line holding two objects. Parsed as
    one text (polars' str.json_decode on the column of lines) the cut line came out whole and was kept, and rows
    can merge or split. Each line is read on its own instead: both are bad JSON, as for json.loads."""
    import ops.ingest.amazon as amazon

    def rec(user, rating, ts):
        return json.dumps({"reviewerID": user, "asin": "B001", "overall": rating, "unixReviewTime": ts, "t": "fine"})

    cut = [rec("A2", 2.0, 2)[:-3], 'ine"}', rec("A3", 3.0, 3), rec("A4", 4.0, 4)]
    two = [rec("A1", 1.0, 1), '{"reviewerID": "A5", "asin": "B001"}, {"overall": 9.0, "unixReviewTime": 9}',
           rec("A6", 5.0, 6)]
    for name, lines, kept_users, bad_lines in [("cut", cut, ["A3", "A4"], [1, 2]), ("two", two, ["A1", "A6"], [2])]:
        path = lines_writer(tmp_path / name / "reviews_Beauty_5.json", lines)
        assert amazon._vector_block(path.read_bytes(), amazon.release("2014", "Beauty")) is None
        kept, quarantine = _compare(path)
        assert kept["user_id"].to_list() == kept_users
        assert quarantine["line"].to_list() == bad_lines and all(r.startswith("bad JSON") for r in quarantine["reason"])


def test_vectorised_reviews_line_breaks_and_bytes_python_reads_differently(tmp_path, monkeypatch):
    import ops.ingest.amazon as amazon

    monkeypatch.setattr(amazon, "BLOCK_BYTES", 200)
    good = json.dumps({"reviewerID": "A1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1300000000})
    data = b"".join([
        b"\xef\xbb\xbf" + good.encode() + b"\r\n",  # a byte-order mark: kept in the text by both, so bad JSON
        good.encode() + b"\r\n",  # CRLF: polars reads it
        good.encode() + b"\r" + good.replace("A1", "A2").encode() + b"\n",  # a lone CR: two lines for Python
        good.encode() + b"\r\r\n",
        good.replace("A1", "A\xff").encode("latin-1") + b"\n",  # not UTF-8: U+FFFD for Python
        good.replace("A1", "A\u00e9").encode()[:-20] + b"\n",  # cut inside the record
        (good.encode() + b"\n") * 4,
        good.encode(),  # no final newline
    ])
    path = tmp_path / "reviews_Beauty_5.json"
    path.write_bytes(data)
    kept, quarantine = _compare(path)
    assert "A2" in kept["user_id"].to_list() and "A\ufffd" in kept["user_id"].to_list()
    assert kept["line"].max() == 13  # 11 physical lines; the lone CR and the CR CR LF add one each
    assert quarantine.filter(pl.col("line") == 1)["reason"].item().startswith("bad JSON")


def test_vectorised_reviews_clean_files_never_take_the_per_line_path(tmp_path, monkeypatch):
    """The fast path is really used: a clean file (each release's keys) reaches parse_review for no line."""
    import ops.ingest.amazon as amazon
    from ops.sample import generate

    monkeypatch.setattr(amazon, "BLOCK_BYTES", 4096)
    calls = []
    real = amazon.parse_review
    monkeypatch.setattr(amazon, "parse_review", lambda line, rel_: calls.append(line) or real(line, rel_))
    for version, category in (("2014", "Beauty"), ("2018", "Beauty"), ("2023", "Beauty")):
        d = generate("amazon", tmp_path / version, "tiny", seed=0, corrupt=False, version=version, gz=True)
        path = next(p for p in d.iterdir() if not p.name.startswith(("meta_", "planted")))
        calls.clear()
        kept, quarantine = _compare(path, version, category)
        ref_calls = len(calls)  # the line-by-line reading calls it for every line
        calls.clear()
        amazon._read_reviews(path, path.name, amazon.release(version, category), amazon.Quarantine())
        assert calls == [] and ref_calls == kept.height > 100 and quarantine.height == 0


@pytest.mark.parametrize("version", ["2014", "2023"])
@pytest.mark.parametrize("block", [160, 1 << 20])
@pytest.mark.parametrize("odd_bytes", [False, True])
def test_vectorised_meta_prefilter_equals_line_by_line(tmp_path, monkeypatch, version, block, odd_bytes):
    """The meta prefilter through polars gives the same items, quarantine and accounts as Python's regex per line,
    on lines where the two regex engines or line readings could differ."""
    import ops.ingest.amazon as amazon
    from ops.ingest.common import ItemBuilder, Quarantine

    monkeypatch.setattr(amazon, "BLOCK_BYTES", block)  # 160: lines longer than a block, mixed paths
    vectorised = []
    real_block = amazon._meta_block
    monkeypatch.setattr(amazon, "_meta_block", lambda *a: vectorised.append(real_block(*a)) or vectorised[-1])
    key = "asin" if version == "2014" else "parent_asin"
    rel_ = amazon.release(version, "Beauty")

    def meta(item, title="T", **kw):
        rec = {key: item, "title": title, **kw}
        return repr(rec) if version == "2014" else json.dumps(rec)

    lines = [
        meta("B001"), meta("B404"),  # wanted, never reviewed
        meta("B002", title="x" * 500),
        meta("B001", title="other"),  # conflicting duplicate of a wanted item: quarantined
        meta("B404", title="\u00e9"),
        f'{{"{key}"\x1c: "B404", "title": "odd space"}}',  # Python's \\s matches \x1c, Rust's does not
        f'{{"{key}"\x1c: "B001", "title": "odd space, wanted"}}',
        '{"title": "no id"}', "", "  ",
        f'{{"{key}": "B003", "title": "cut',  # wanted, unparsable: quarantined
        f'{{"{key}": "B999", "title": "cut',  # unwanted and unparsable: filtered without parsing
        f"{{'{key}' : 'B003', 'title': 'python literal with spaces'}}",
        meta("B004"),
    ]
    text = "\n".join(lines) + "\r\n" + meta("B005") + "\n" + meta("B404") + "\n" + meta("B006") + "\n"
    data = text.encode()
    if odd_bytes:  # a lone CR (a line break for Python only) and a byte that is not UTF-8
        data += (meta("B404") + "\r" + meta("B404") + "\n").encode() + b'{"x": "\xff"}\n'
    path = tmp_path / ("meta_Beauty.json" if version == "2014" else "meta_Beauty.jsonl")
    path.write_bytes(data)
    wanted = {"B001", "B002", "B003", "B004", "B005", "B006"}
    results = []
    for read in (amazon._read_meta, amazon.read_meta_line_by_line):
        items, quarantine = ItemBuilder("t", amazon.ATTRIBUTES), Quarantine()
        account = read(path, path.name, rel_, wanted, items, quarantine, False)
        results.append((items.frame().rows(), quarantine.frame().rows(),
                        (account.rows_in, account.kept, account.quarantined, dict(account.filtered))))
    assert results[0] == results[1]
    if not odd_bytes:  # every block through polars
        assert vectorised and None not in vectorised
    elif block == 160:  # both paths in one file
        assert None in vectorised and any(v is not None for v in vectorised)
    items, quarantine, (rows_in, kept, quarantined, filtered) = results[0]
    expected = {"B001", "B002", "B004", "B005", "B006"} | ({"B003"} if version == "2014" else set())
    assert {r[0] for r in items} == expected  # (the 2014 reader accepts a Python literal with spaces)
    assert filtered["item has no kept review"] >= 4 and rows_in == kept + quarantined + sum(filtered.values())


def test_amazon_surrogate_escapes_odd_details_and_times_beyond_int64(tmp_path, lines_writer):
    """Scraped text holds broken emoji: a JSON escape of a lone UTF-16 surrogate decodes to a code point that
    UTF-8 (polars, Parquet) cannot hold. It becomes U+FFFD, as an undecodable byte does, and a pair written as
    two escapes in a Python literal becomes its character. A `details` that is not a dict has no brand; a time
    beyond Int64 is a bad timestamp. None of them is a crash."""
    lines_writer(tmp_path / "Cat.jsonl", [
        json.dumps({"user_id": "U\ud800", "parent_asin": "I1", "rating": 5.0, "timestamp": 1600000000000}),
        json.dumps({"user_id": "U2", "parent_asin": "I2", "rating": 4.0, "timestamp": 1600000000000}),
        json.dumps({"user_id": "U3", "parent_asin": "I1", "rating": 4.0, "timestamp": 1e300}),
        json.dumps({"user_id": "U3", "parent_asin": "I1", "rating": 4.0, "timestamp": 2**64 * 1000})])
    lines_writer(tmp_path / "meta_Cat.jsonl", [
        json.dumps({"parent_asin": "I1", "title": "Cream \ud83d\ude00 \udc00", "details": ["Brand"]}),
        json.dumps({"parent_asin": "I2", "title": "Soap", "store": None, "details": {"Brand": "Acme"}})])
    res = load_amazon(tmp_path, "t", "Cat", "2023")
    assert res.items.select("item_id", "title", "brand").rows() == [("I1", "Cream \U0001f600 \ufffd", ""),
                                                                    ("I2", "Soap", "Acme")]
    assert res.interactions.select("user_id", "item_id").rows() == [("U\ufffd", "I1"), ("U2", "I2")]
    assert res.quarantine.select("line", "reason", "detail").rows() == [
        (3, "bad timestamp or rating", "(1e+300, 4.0)"), (4, "bad timestamp or rating", f"({2**64 * 1000}, 4.0)")]
    for frame in (res.items, res.interactions, res.quarantine):
        frame.write_parquet(tmp_path / "t.parquet")
    literal = r"{'asin': 'B1', 'title': u'Smile \ud83d\ude00 \udc00', 'brand': 'x'}"
    assert parse_meta_line(literal, python_literal=True)["title"] == "Smile \U0001f600 \ufffd"


def test_reviews_without_meta_are_refused_naming_the_file_that_holds_the_item_text(tmp_path, lines_writer):
    lines_writer(tmp_path / "Cat.jsonl", [json.dumps(
        {"user_id": "U1", "parent_asin": "I1", "rating": 5.0, "timestamp": 1600000000000})])
    with pytest.raises(IngestError, match=r"item titles.*metadata file meta_Cat\.jsonl\[\.gz\]"):
        load_amazon(tmp_path, "t", "Cat", "2023")
