"""Seeded byte-mutation fuzz: the vectorised readers against their line-by-line specifications, on files with
stray control bytes, bad UTF-8, surrogate escapes, BOMs, CRs, quotes, backslashes and broken lines. Each case
must give the same tables, quarantine and accounts, or the same IngestError (a file whose first records all
fail), and never another exception. (It found the bugs fixed with it: lines cut at \\x1f, polars' lax times,
JSON lines joined across a cut string, surrogates that UTF-8 cannot hold.)"""
import json
import random

import pytest

import ops.ingest.amazon as amazon
from ops.ingest.common import IngestError, ItemBuilder, Quarantine
from ops.ingest.hm import load_hm
from ops.ingest.mind import load_mind
from storage import sink_frames
from tests.reference_amazon import read_reviews_line_by_line
from tests.reference_mind import load_mind_line_by_line

JUNK = [b"\r", b"\n", b"\x1f", b"\x1c", b"\x00", b"\xff", b"\xc2\xa0", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\t",
        b" ", b'"', b"\\", b"\\u", b"\\ud800", b"-", b"N", b"1", b"{", b"}", b":", b",", b"'", b"e"]
CASES = 60


def _mutate(rng: random.Random, lines: list[bytes]) -> bytes:
    out = []
    for line in lines:
        line = bytearray(line)
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            at = rng.randint(0, len(line))
            line[at:at] = rng.choice(JUNK)
        out.append(bytes(line))
    return b"\n".join(out) + rng.choice([b"", b"\n", b"\r\n"])


def _outcome(read):
    try:
        return read()
    except IngestError as exc:  # the format guard: every leading record failed
        return f"IngestError: {exc}"


NEWS = [b"N1\tsports\tfootball\tTeam wins\tA long match.\thttps://a/N1.html\t[]\t[]",
        b'N2\tfinance\tmarkets\tStocks "rally"\t\thttps://a/N2.html\t[{"Label": "X"}]\t[]',
        b"N3\tnews\tworld\tTitle\tAbstract\thttps://a/N3.html\t[]\t[]"]
BEHAVIORS = [b"1\tU1\t11/11/2019 9:05:58 AM\tN1 N2\tN2-1 N1-0", b"2\tU2\t11/12/2019 1:00:00 PM\t\tN1-1 N3",
             b"3\tU1\t11/13/2019 10:00:00 PM\tN1 N2\tN3-1", b"4\tU3\t1/2/2019 12:00:00 AM\tN3 N1 N3\tN2-1"]


@pytest.mark.parametrize("seed", range(CASES))
def test_mind_readers_agree_on_mutated_files(tmp_path, seed):
    rng = random.Random(seed)
    (tmp_path / "news.tsv").write_bytes(_mutate(rng, NEWS))
    (tmp_path / "behaviors.tsv").write_bytes(_mutate(rng, BEHAVIORS))
    fast, ref = _outcome(lambda: load_mind(tmp_path, "t")), _outcome(lambda: load_mind_line_by_line(tmp_path, "t"))
    if isinstance(fast, str) or isinstance(ref, str):
        assert fast == ref
        return
    assert fast.items.equals(ref.items) and fast.interactions.equals(ref.interactions)
    assert fast.quarantine.equals(ref.quarantine) and fast.accounts == ref.accounts
    assert fast.shown_not_clicked.collect().equals(ref.shown_not_clicked)
    assert all(a.balanced for a in fast.accounts)
    # storable: no surrogate, no bad type
    for frame in (fast.items, fast.interactions, fast.quarantine, fast.shown_not_clicked.collect()):
        frame.write_parquet(tmp_path / "t.parquet")


@pytest.mark.parametrize("version", amazon.VERSIONS)
@pytest.mark.parametrize("seed", range(CASES // 3))
def test_amazon_readers_agree_on_mutated_files(tmp_path, monkeypatch, version, seed):
    monkeypatch.setattr(amazon, "BLOCK_BYTES", 300)  # several blocks, each read by polars or by Python
    rng = random.Random(seed)
    rel_ = amazon.release(version, "Cat")
    reviews = [json.dumps({rel_.user_key: f"U{k}", rel_.item_key: f"B{k % 3}", rel_.rating_key: 4.0,
                           rel_.time_key: 1300000000 + k, "text": "fine \u00e9"}).encode() for k in range(6)]
    path = tmp_path / "reviews.json"
    path.write_bytes(_mutate(rng, reviews))
    q_fast, q_ref = Quarantine(), Quarantine()
    fast = _outcome(lambda: amazon._read_reviews(path, "r", rel_, q_fast))
    ref = _outcome(lambda: read_reviews_line_by_line(path, "r", rel_, q_ref))
    if isinstance(fast, str) or isinstance(ref, str):
        assert fast == ref
    else:
        assert fast[0] == ref[0] and fast[1].equals(ref[1]) and q_fast.frame().rows() == q_ref.frame().rows()
    metas = []
    for k in range(6):
        meta = {rel_.meta_item_key: f"B{k}", "title": f"T{k} \u00e9", "description": ["d"], "details": {"Brand": "x"}}
        metas.append((repr(meta) if rel_.python_literal_meta else json.dumps(meta)).encode())
    path = tmp_path / "meta.json"
    path.write_bytes(_mutate(rng, metas))
    results = []
    for read in (amazon._read_meta, amazon.read_meta_line_by_line):
        items, quarantine = ItemBuilder("t", amazon.ATTRIBUTES), Quarantine()
        account = _outcome(lambda: read(path, "m", rel_, {"B0", "B1", "B2"}, items, quarantine, False))
        results.append(account if isinstance(account, str) else (account, items.frame().rows(),
                                                                  quarantine.frame().rows()))
        if not isinstance(account, str):
            items.frame().write_parquet(tmp_path / "i.parquet")
            quarantine.frame().write_parquet(tmp_path / "q.parquet")
    assert results[0] == results[1]


ARTICLES = [b"article_id,prod_name,product_type_name,product_group_name,graphical_appearance_name,"
            b"colour_group_name,perceived_colour_value_name,index_name,detail_desc",
            b'0108775015,Strap top,Vest top,Garment Upper body,Solid,Black,Dark,Ladieswear,"Jersey, narrow"',
            b"0108775044,Strap top,Vest top,Garment Upper body,Solid,White,Light,Ladieswear,Jersey top"]
CUSTOMERS = [b"customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code",
             b"c1,,,ACTIVE,NONE,49,p", b"c2,1.0,1.0,ACTIVE,Regularly,25,p"]
TRANSACTIONS = [b"t_dat,customer_id,article_id,price,sales_channel_id", b"2018-09-20,c1,0108775015,0.0508,2",
                b"2018-09-21,c2,0108775044,0.03,1", b"2018-09-22,c1,0108775044,0.01,1"]


@pytest.mark.parametrize("seed", range(CASES // 3))
def test_hm_loader_accounts_for_every_line_of_mutated_files(tmp_path, seed):
    rng = random.Random(seed)
    for name, lines in (("articles.csv", ARTICLES), ("customers.csv", CUSTOMERS),
                        ("transactions_train.csv", TRANSACTIONS)):
        (tmp_path / name).write_bytes(lines[0] + b"\n" + _mutate(rng, lines[1:]))
    res = _outcome(lambda: load_hm(tmp_path, "t", workdir=tmp_path / "w"))
    if isinstance(res, str):
        return
    written = sink_frames({tmp_path / "i.parquet": res.interactions, tmp_path / "q.parquet": res.quarantine})
    res.finalize({"interactions": written[str(tmp_path / "i.parquet")],
                  "quarantine": written[str(tmp_path / "q.parquet")]})
    assert all(a.balanced for a in res.accounts), [a.as_row() for a in res.accounts]
    tx = next(a for a in res.accounts if a.table == "interactions")
    assert tx.rows_in == (tmp_path / "transactions_train.csv").read_bytes().count(b"\n") + (
        not (tmp_path / "transactions_train.csv").read_bytes().endswith(b"\n")) - 1
