import csv
import gzip
import io
import mmap

import polars as pl
import pytest

from ops.ingest import linecount
from ops.ingest.common import IngestError, LineCounter
from ops.ingest.hm import load_hm
from ops.sample import ARTICLE_COLUMNS
from storage import sink_frames

CUST = ["a" * 64, "b" * 64]


def _articles(rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ARTICLE_COLUMNS)
    for r in rows:
        w.writerow(r)
    return buf.getvalue().splitlines()


def _article(aid, desc, ptype="Trousers", colour="Black"):
    row = {c: "x" for c in ARTICLE_COLUMNS}
    row.update(article_id=aid, detail_desc=desc, product_type_name=ptype, colour_group_name=colour)
    return [row[c] for c in ARTICLE_COLUMNS]


@pytest.fixture
def hm_dir(tmp_path, lines_writer):
    arts = _articles([
        _article("0108775015", "Jersey top, with a comma\nand a second line"),  # quoted multi-line field
        _article("0108775044", "Plain"),
        ["0999", "too", "few"],
    ])
    lines_writer(tmp_path / "articles.csv", arts)
    lines_writer(tmp_path / "customers.csv",
                 ["customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code",
                  f"{CUST[0]},,,ACTIVE,NONE,49,p", f"{CUST[1]},1.0,1.0,ACTIVE,Regularly,25,p"])
    lines_writer(tmp_path / "transactions_train.csv", [
        "t_dat,customer_id,article_id,price,sales_channel_id",
        f"2018-09-20,{CUST[0]},0108775015,0.0508305084745762,2",
        f"2018-09-21,{CUST[1]},0108775044,0.0304915254237288,1",
        f"2018-13-45,{CUST[0]},0108775015,0.05,2",  # bad date
        f"2018-09-21,{CUST[0]},108775015,0.05,2",  # leading zero lost -> unknown article
        f"2018-09-21,{'c' * 64},0108775015,0.05,2",  # unknown customer
        f"2018-09-21,{CUST[0]},0108775015,0.05",  # too few columns
        f"2018-09-21,{CUST[0]},0108775015,0.05,2,9",  # too many
        f"2018-09-21,{CUST[0]},0108775015,abc,2",  # bad price
        "",  # a blank line is quarantined too: nothing vanishes
        f"2018-09-22,{CUST[1]},0108775015,0.01,1",
    ], gz=True)
    return tmp_path


def _run(res, tmp_path):
    out = sink_frames({tmp_path / "i.parquet": res.interactions, tmp_path / "q.parquet": res.quarantine})
    written = {"interactions": out[str(tmp_path / "i.parquet")], "quarantine": out[str(tmp_path / "q.parquet")]}
    res.finalize(written)
    return pl.read_parquet(tmp_path / "i.parquet"), pl.read_parquet(tmp_path / "q.parquet")


def test_hm_articles_keep_leading_zeros_and_multiline(hm_dir, tmp_path):
    res = load_hm(hm_dir, "t", workdir=tmp_path / "w")
    assert res.items["item_id"].to_list() == ["0108775015", "0108775044"]
    assert res.items["detail_desc"][0] == "Jersey top, with a comma and a second line"
    assert res.items.columns[2:9] == ["detail_desc", "product_type_name", "product_group_name",
                                      "graphical_appearance_name", "colour_group_name",
                                      "perceived_colour_value_name", "index_name"]


def test_hm_transactions_stream_with_quarantine(hm_dir, tmp_path):
    (tmp_path / "w").mkdir()
    res = load_hm(hm_dir, "t", workdir=tmp_path / "w")
    inter, q = _run(res, tmp_path)
    assert inter["item_id"].to_list() == ["0108775015", "0108775044", "0108775015"]
    assert inter["timestamp"][0] == 1537401600  # 2018-09-20 UTC
    assert inter["sales_channel_id"].to_list() == [2, 1, 1]
    tx = q.filter(pl.col("source_file") == "transactions_train.csv.gz")
    assert dict(zip(tx["line"], tx["reason"])) == {
        4: "bad date, expected YYYY-MM-DD",
        5: "unknown article_id",
        6: "unknown customer_id",
        7: "expected 5 comma-separated columns, found fewer",
        8: "expected 5 comma-separated columns, found more",
        9: "bad price",
        10: "blank line",
    }
    raw = dict(zip(tx["line"], tx["raw"]))
    assert raw[5] == f"2018-09-21,{CUST[0]},108775015,0.05,2"
    assert raw[7] == f"2018-09-21,{CUST[0]},0108775015,0.05"
    assert raw[8] == f"2018-09-21,{CUST[0]},0108775015,0.05,2,9"
    assert raw[10] == ""
    art = q.filter(pl.col("source_file") == "articles.csv")
    assert art["line"].to_list() == [5] and art["reason"][0] == "expected 25 columns, found 3"
    for acc in res.accounts:
        assert acc.balanced, acc
    tx_acc = next(a for a in res.accounts if a.table == "interactions")
    assert (tx_acc.rows_in, tx_acc.kept, tx_acc.quarantined) == (10, 3, 7)


def test_hm_bytes_that_are_not_utf8_are_quarantined_not_fatal(hm_dir, tmp_path):
    gz = hm_dir / "transactions_train.csv.gz"
    data = gzip.decompress(gz.read_bytes()) + b"2018-09-22," + b"a" * 63 + b"\xff,0108775015,0.01,1\n"
    gz.unlink()
    (hm_dir / "transactions_train.csv").write_bytes(data)
    res = load_hm(hm_dir, "t", workdir=tmp_path / "w")
    inter, q = _run(res, tmp_path)
    assert inter.height == 3
    bad = q.filter(pl.col("line") == 12)
    assert bad["reason"].to_list() == ["unknown customer_id"] and "a" * 63 + "\ufffd" in bad["raw"][0]
    assert all(acc.balanced for acc in res.accounts)


def test_hm_wrong_header_and_missing_file(tmp_path, lines_writer):
    with pytest.raises(IngestError, match="H&M articles: no file articles.csv"):
        load_hm(tmp_path, "t")
    lines_writer(tmp_path / "articles.csv", ["article_id;prod_name", "1;x"])
    lines_writer(tmp_path / "customers.csv", ["customer_id", "a"])
    lines_writer(tmp_path / "transactions_train.csv", ["t_dat,customer_id,article_id,price,sales_channel_id"])
    with pytest.raises(IngestError, match=r"articles.csv line 1: not an H&M CSV header: missing column\(s\) "
                                          r"article_id, detail_desc"):
        load_hm(tmp_path, "t")


@pytest.mark.parametrize("window", [None, mmap.ALLOCATIONGRANULARITY])
def test_line_count_is_exact_across_windows(tmp_path, monkeypatch, window):
    if window:  # a file of several windows, with newlines right at a window's last byte and its first
        monkeypatch.setattr(linecount, "WINDOW", window)
    g = mmap.ALLOCATIONGRANULARITY
    body = bytearray(b"x" * (3 * g + 17))
    for at in (g - 1, g, 2 * g + 5, 2 * g + 6):
        body[at] = 10
    cases = {
        b"": 0,
        b"\n": 1,
        b"a": 1,  # a final line without its newline still counts
        b"a\r\nb\r\n\r\n": 3,  # CRLF and a blank line
        bytes(body): 5,
        bytes(body) + b"\n": 5,
    }
    for i, (data, expected) in enumerate(cases.items()):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        assert linecount.count_lines(path) == expected, data[:20]
    # The same count through the child process that load_hm starts (it runs the module as a script).
    counter = LineCounter(path)
    assert counter.result() == 5 and counter.first_invalid_utf8_line() is None


@pytest.mark.parametrize("window", [None, mmap.ALLOCATIONGRANULARITY])
def test_first_line_that_is_not_utf8(tmp_path, monkeypatch, window):
    if window:  # a multi-byte character split across two windows is still valid
        monkeypatch.setattr(linecount, "WINDOW", window)
    g = mmap.ALLOCATIONGRANULARITY
    euro = "€".encode()
    split = b"x" * (g - 1) + euro + b"\nline 2\n"  # the 3-byte character starts at the window's last byte
    cases = {
        b"plain ascii\n": None,
        "caf\u00e9\nna\u00efve\n".encode(): None,
        split: None,
        split + b"y" * g + b"\xff\n": 3,  # a bad byte two windows later, on line 3
        b"ok\nbad \xe9 latin-1\nok\n": 2,
        b"ok\n" + euro[:2]: 2,  # the file ends inside a character
    }
    for i, (data, expected) in enumerate(cases.items()):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        assert linecount.scan(path) == (linecount.count_lines(path), expected), data[-20:]
    assert LineCounter(path).first_invalid_utf8_line() == 2


def test_hm_byte_order_marks_unit_separators_and_an_overlong_first_line(tmp_path, lines_writer):
    """Files saved by a spreadsheet start with a byte-order mark; a unit separator (\\x1f) inside a line is data
    (the raw-line reader must not split at it and drop the rest); a first transaction line with 8 fields is a
    row to quarantine (polars sizes its columns from the first line and would raise a SchemaError)."""
    lines_writer(tmp_path / "articles.csv", _articles([_article("0108775015", "Top"), _article("0108775044", "Tee")]))
    lines_writer(tmp_path / "customers.csv", [
        "customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code",
        f"{CUST[0]},,,ACTIVE,NONE,49,p", f"{CUST[1]},1.0\x1f,1.0,ACTIVE,Regularly,25,p"])
    lines_writer(tmp_path / "transactions_train.csv", [
        "t_dat,customer_id,article_id,price,sales_channel_id",
        f"2018-09-20,{CUST[0]},0108775015,0.05,2,x,y,z",
        f"2018-09-20,{CUST[1]},0108775044,0.03,1"])
    for name in ("articles.csv", "customers.csv", "transactions_train.csv"):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    res = load_hm(tmp_path, "t", workdir=tmp_path / "w")
    assert res.items["item_id"].to_list() == ["0108775015", "0108775044"]
    inter, q = _run(res, tmp_path)
    assert inter.select("user_id", "item_id").rows() == [(CUST[1], "0108775044")]
    assert q.select("source_file", "line", "reason", "raw").rows() == [
        ("transactions_train.csv", 2, "expected 5 comma-separated columns, found more",
         f"2018-09-20,{CUST[0]},0108775015,0.05,2,x")]  # (the parser keeps 6 fields of a longer line)
    assert [(a.source_file, a.rows_in, a.kept) for a in res.accounts] == [
        ("articles.csv", 2, 2), ("customers.csv", 2, 2), ("transactions_train.csv", 2, 1)]
    assert all(a.balanced for a in res.accounts)


def test_line_field_separator_is_a_byte_the_file_lacks(tmp_path):
    from ops.ingest.common import line_field_separator

    cases = {b"a\tb\n": "\x1f", b"a\x1fb\n": "\x1e", b"\x1f\x1e\x1d\x1c": "\x01"}
    for i, (data, expected) in enumerate(cases.items()):
        (tmp_path / f"f{i}").write_bytes(data)
        assert line_field_separator(tmp_path / f"f{i}") == expected
    (tmp_path / "all").write_bytes(bytes(range(1, 128)))
    with pytest.raises(IngestError, match="every ASCII control character"):
        line_field_separator(tmp_path / "all")


def test_hm_ids_that_lost_their_leading_zero_in_a_pandas_round_trip_are_restored_and_counted(tmp_path):
    import pandas as pd

    from ops.ingest.hm import RESTORED_ZEROS
    from ops.sample import generate

    original = generate("hm", tmp_path / "orig", "tiny", seed=0)
    resaved = tmp_path / "resaved"
    resaved.mkdir()
    for name in ("articles.csv", "customers.csv", "transactions_train.csv"):
        # what users do: read, re-save. pandas reads article_id as an int, so "0108775015" becomes "108775015"
        # (and it skips the sample's planted lines with a wrong field count)
        pd.read_csv(original / name, on_bad_lines="skip").to_csv(resaved / name, index=False)
    lost = pl.read_csv(resaved / "transactions_train.csv", schema_overrides={"article_id": pl.String})
    assert lost["article_id"].str.len_chars().max() < 10
    want = load_hm(original, "t", workdir=tmp_path / "w1")
    want_tx, _ = _run(want, tmp_path / "a")
    got = load_hm(resaved, "t", workdir=tmp_path / "w2")
    got_tx, _ = _run(got, tmp_path / "b")
    assert got.items["item_id"].str.len_chars().min() == 10  # the official 10-digit ids again
    assert set(got.items["item_id"]) <= set(want.items["item_id"]) and got.items.height >= want.items.height - 3
    assert got_tx["item_id"].is_in(want.items["item_id"].implode()).all()
    assert got_tx.height >= 0.95 * want_tx.height  # they join: not quarantined as unknown articles
    accounts = {r["source_file"]: r for r in got.accounting_frame().iter_rows(named=True)}
    assert accounts["articles.csv"]["repaired"] > 0 and RESTORED_ZEROS in accounts["articles.csv"]["repaired_reasons"]
    assert accounts["transactions_train.csv"]["repaired"] == lost.height  # every line of the re-saved file
    assert all(r["balanced"] for r in accounts.values())
    clean = {r["source_file"]: r["repaired"] for r in want.accounting_frame().iter_rows(named=True)}
    assert set(clean.values()) == {0}  # files with their zeros are left alone
