"""Deterministic generator of small datasets in the exact original file formats, with planted structure.

Every item has two latent aspects (a primary one such as a news topic / product type, and a secondary one such
as a tone / colour / brand family) whose vocabulary shows in its text. Users prefer a few primary aspects and one
secondary aspect; their sequences move Markov-like between items of a preferred aspect (stay on the current
aspect with probability `stickiness`), so that a tokenizer that captures the aspects measurably helps a
recommender compared with random codes. The ground truth is written beside the raw files as
`planted_aspects.csv` (not part of any original format; loaders ignore it).

With `corrupt=True` a few malformed lines are planted (bad column count, bad JSON, unknown item, bad timestamp)
so that quarantine and row accounting have something to show.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from storage.atomic import atomic_path, atomic_write_bytes


@dataclass(frozen=True)
class SampleSize:
    n_items: int
    n_users: int
    mean_length: float


SIZES = {
    "tiny": SampleSize(n_items=90, n_users=60, mean_length=7),
    "small": SampleSize(n_items=400, n_users=300, mean_length=10),
    "demo": SampleSize(n_items=2400, n_users=1500, mean_length=14),
}

# Shared filler words: present in every aspect so that raw bag-of-words overlap is not the whole story.
FILLER = ("new", "latest", "review", "daily", "report", "best", "today", "people", "world", "time", "way", "more",
          "update", "story", "week", "top", "inside", "guide", "look", "year")


@dataclass(frozen=True)
class Aspects:
    primary: tuple[str, ...]  # names
    primary_words: tuple[tuple[str, ...], ...]
    sub: tuple[tuple[str, ...], ...]  # sub-aspects per primary (e.g. subcategory)
    secondary: tuple[str, ...]
    secondary_words: tuple[tuple[str, ...], ...]


MIND_ASPECTS = Aspects(
    primary=("sports", "finance", "health", "travel", "music", "science", "foodanddrink", "autos"),
    primary_words=(
        ("match", "coach", "season", "league", "playoff", "goal", "team", "championship", "score", "stadium"),
        ("stocks", "market", "investors", "earnings", "bank", "inflation", "shares", "economy", "rates", "fund"),
        ("doctors", "patients", "disease", "vaccine", "hospital", "diet", "study", "symptoms", "therapy", "sleep"),
        ("flights", "airport", "beach", "hotel", "island", "passport", "destination", "cruise", "resort", "trip"),
        ("album", "singer", "concert", "band", "songs", "tour", "grammy", "guitar", "rapper", "playlist"),
        ("researchers", "planet", "nasa", "species", "climate", "telescope", "fossil", "physics", "ocean", "genes"),
        ("recipe", "chef", "restaurant", "dinner", "wine", "bakery", "flavor", "cheese", "pasta", "dessert"),
        ("car", "engine", "electric", "truck", "dealer", "sedan", "horsepower", "recall", "mileage", "suv"),
    ),
    sub=(("football", "basketball", "tennis"), ("markets", "personalfinance", "realestate"),
         ("medical", "nutrition", "fitness"), ("traveltips", "adventure", "cities"),
         ("musicnews", "festivals", "classical"), ("space", "environment", "biology"),
         ("recipes", "dining", "drinks"), ("autosnews", "autosreviews", "motorsports")),
    secondary=("breaking", "analysis", "howto", "opinion"),
    secondary_words=(("breaking", "just", "announced", "live"), ("analysis", "explained", "why", "data"),
                     ("how", "tips", "steps", "easy"), ("opinion", "column", "think", "should")),
)

AMAZON_ASPECTS = Aspects(
    primary=("skincare", "haircare", "makeup", "fragrance", "nails", "bath"),
    primary_words=(
        ("moisturizer", "serum", "cleanser", "spf", "retinol", "toner", "cream", "acne", "hydrating", "wrinkle"),
        ("shampoo", "conditioner", "curl", "frizz", "keratin", "scalp", "dryshampoo", "volume", "hairspray", "mask"),
        ("mascara", "lipstick", "foundation", "eyeliner", "concealer", "blush", "palette", "primer", "bronzer",
         "gloss"),
        ("perfume", "cologne", "eau", "floral", "musk", "citrus", "woody", "vanilla", "parfum", "scent"),
        ("polish", "nail", "gel", "manicure", "cuticle", "topcoat", "lacquer", "file", "acrylic", "pedicure"),
        ("bubble", "soap", "bathbomb", "loofah", "shower", "salts", "lotion", "scrub", "sponge", "oil"),
    ),
    sub=(("Face", "Body", "Sun"), ("Shampoos", "Styling", "Treatments"), ("Eyes", "Lips", "Face Makeup"),
         ("Women's", "Men's", "Unisex"), ("Nail Polish", "Nail Tools", "Nail Care"),
         ("Bath Salts", "Soaps", "Body Wash")),
    secondary=("luxe", "organic", "budget", "pro"),
    secondary_words=(("luxury", "premium", "gold", "elegant"), ("organic", "natural", "vegan", "botanical"),
                     ("value", "pack", "everyday", "basic"), ("professional", "salon", "expert", "studio")),
)

HM_PRODUCT_TYPES = (
    ("Trousers", "Garment Lower body", ("trousers", "waist", "legs", "pockets", "zip", "fly")),
    ("Dress", "Garment Full body", ("dress", "sleeves", "neckline", "skirt", "flared", "lined")),
    ("Sweater", "Garment Upper body", ("jumper", "knit", "ribbed", "cuffs", "wool", "soft")),
    ("T-shirt", "Garment Upper body", ("t-shirt", "jersey", "cotton", "crew", "neck", "short")),
    ("Sneakers", "Shoes", ("trainers", "lacing", "sole", "rubber", "canvas", "padded")),
    ("Bag", "Accessories", ("bag", "handle", "strap", "compartment", "shoulder", "clasp")),
    ("Swimsuit", "Swimwear", ("swimsuit", "lined", "cups", "straps", "stretch", "beach")),
    ("Jacket", "Garment Upper body", ("jacket", "hood", "padded", "zip", "lining", "collar")),
)
HM_COLOURS = (("Black", "Dark", ("black",)), ("White", "Light", ("white",)), ("Dark Blue", "Dark", ("navy", "blue")),
              ("Red", "Medium", ("red",)), ("Beige", "Light", ("beige",)),
              ("Green", "Medium Dusty", ("green", "khaki")))
HM_GRAPHICS = ("Solid", "Stripe", "All over pattern", "Denim")
HM_INDEX = ("Ladieswear", "Menswear", "Divided", "Children Sizes 92-140")


def _write(path: Path, text: str, gz: bool = False) -> None:
    data = text.encode("utf-8")
    if gz:
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:  # mtime 0: byte-identical reruns
            fh.write(data)
        data = buf.getvalue()
        path = path.with_name(path.name + ".gz")
    atomic_write_bytes(path, data)


class _World:
    """Items with (primary, sub, secondary) aspects and users with aspect preferences; generates sequences."""

    def __init__(self, n_primary: int, n_sub: int, n_secondary: int, size: SampleSize, seed: int,
                 stickiness: float = 0.75):
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.n_items = size.n_items
        self.primary = rng.integers(0, n_primary, size.n_items)
        self.sub = rng.integers(0, n_sub, size.n_items)
        self.secondary = rng.integers(0, n_secondary, size.n_items)
        self.popularity = rng.zipf(1.6, size.n_items).clip(max=50).astype(float)
        self.size = size
        self.stickiness = stickiness
        self.n_primary, self.n_sub, self.n_secondary = n_primary, n_sub, n_secondary

    def large(self) -> bool:
        """Whether `event_arrays` draws the events: the per-event loop of `sequences` writes about 1 M events a
        minute, so real-size H&M (31.8 M transactions) takes the vectorized draw."""
        return self.size.n_users * self.size.mean_length > LARGE_EVENTS

    def sequences(self) -> list[list[int]]:
        rng = self.rng
        by_primary = [np.flatnonzero(self.primary == p) for p in range(self.n_primary)]
        out = []
        for _ in range(self.size.n_users):
            liked = rng.choice(self.n_primary, size=min(2, self.n_primary), replace=False)
            liked_weights = rng.dirichlet(np.ones(len(liked)))
            fav_secondary = rng.integers(0, self.n_secondary)
            length = max(3, int(rng.geometric(1.0 / self.size.mean_length)))
            length = min(length, 4 * int(self.size.mean_length))
            current = int(rng.choice(liked, p=liked_weights))
            seq: list[int] = []
            for _ in range(length):
                if rng.random() > self.stickiness:
                    current = int(rng.choice(liked, p=liked_weights))
                pool = by_primary[current]
                w = self.popularity[pool] * np.where(self.secondary[pool] == fav_secondary, 4.0, 1.0)
                if seq:  # same sub-aspect as the previous item is more likely: sequential signal
                    w = w * np.where(self.sub[pool] == self.sub[seq[-1]], 2.0, 1.0)
                    w = w * np.where(pool == seq[-1], 0.0, 1.0)  # no immediate repeat
                item = int(rng.choice(pool, p=w / w.sum()))
                seq.append(item)
            out.append(seq)
        return out

    def event_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The planted model of `sequences` drawn for all users at once, one step of every user's chain at a time
        (a random stream of its own, so not `sequences`' draws): (length per user, items: max length x users,
        -1 past a user's end). Each step samples every user's item by one `searchsorted` over the concatenated
        CDFs of all (primary, secondary, previous sub-aspect) pools, each offset by its pool number."""
        rng, size = self.rng, self.size
        n, n_p, n_s, n_q = size.n_users, self.n_primary, self.n_secondary, self.n_sub
        liked = np.stack([first := rng.integers(0, n_p, n), (first + rng.integers(1, n_p, n)) % n_p])
        weight_first = rng.random(n)  # the Dirichlet(1, 1) weight of the first liked aspect
        fav = rng.integers(0, n_s, n)
        cap = 4 * int(size.mean_length)
        lengths = np.clip(rng.geometric(1.0 / size.mean_length, n), 3, cap)
        # pool c = (primary p, favourite secondary s, previous item's sub-aspect q; q = n_q: no previous item)
        items_of: list[np.ndarray] = []
        cdfs: list[np.ndarray] = []
        starts: list[int] = []
        offset = 0
        for p in range(n_p):
            pool = np.flatnonzero(self.primary == p)
            for s in range(n_s):
                for q in range(n_q + 1):
                    w = (self.popularity[pool] * np.where(self.secondary[pool] == s, 4.0, 1.0)
                         * np.where(self.sub[pool] == q, 2.0, 1.0))
                    cdf = np.cumsum(w) / w.sum()
                    cdf[-1] = 1.0
                    starts.append(offset)
                    offset += len(cdf)
                    cdfs.append(len(cdfs) + cdf)
                    items_of.append(pool)
        flat_cdf, flat_items = np.concatenate(cdfs), np.concatenate(items_of)
        ends = np.append(np.array(starts[1:]), len(flat_cdf)) - 1

        def choose(users: np.ndarray) -> np.ndarray:
            return np.where(rng.random(len(users)) < weight_first[users], liked[0, users], liked[1, users])

        def draw(users: np.ndarray, current: np.ndarray, prev_sub: np.ndarray) -> np.ndarray:
            pool = (current * n_s + fav[users]) * (n_q + 1) + prev_sub
            at = np.searchsorted(flat_cdf, pool + rng.random(len(users)), side="right")
            return flat_items[np.minimum(at, ends[pool])]  # (u + pool may round up to pool + 1)

        out = np.full((cap, n), -1, dtype=np.int32)
        everyone = np.arange(n)
        current = choose(everyone)
        out[0] = draw(everyone, current, np.full(n, n_q))
        for t in range(1, cap):
            users = np.flatnonzero(lengths > t)
            if not len(users):
                break
            switch = rng.random(len(users)) > self.stickiness
            current[users[switch]] = choose(users[switch])
            prev = out[t - 1, users]
            item = draw(users, current[users], self.sub[prev])
            for _ in range(20):  # no immediate repeat: redraw those (a pool of one item keeps it)
                again = np.flatnonzero(item == prev)
                if not len(again):
                    break
                item[again] = draw(users[again], current[users[again]], self.sub[prev[again]])
            out[t, users] = item
        return lengths, out

    def words(self, vocab: tuple[str, ...], k: int) -> list[str]:
        return list(self.rng.choice(vocab, size=k, replace=True))


LARGE_EVENTS = 2_000_000


def _planted(path: Path, ids: list[str], world: _World, names: tuple[str, str, str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["item_id", *names])
    for i, item in enumerate(ids):
        w.writerow([item, int(world.primary[i]), int(world.sub[i]), int(world.secondary[i])])
    _write(path / "planted_aspects.csv", buf.getvalue())


def generate_mind(out_dir: Path, size: SampleSize, seed: int = 0, corrupt: bool = False, gz: bool = False) -> Path:
    a = MIND_ASPECTS
    world = _World(len(a.primary), 3, len(a.secondary), size, seed)
    rng = world.rng
    ids = [f"N{10000 + i}" for i in range(size.n_items)]
    news = []
    for i, nid in enumerate(ids):
        p, s, t = world.primary[i], world.sub[i], world.secondary[i]
        title = " ".join([*world.words(a.secondary_words[t], 1), *world.words(a.primary_words[p], 3),
                          a.sub[p][s], *world.words(FILLER, 2)]).capitalize()
        # Real MIND abstracts run from empty to ~100 words (median ~25): a long-tailed filler count gives the
        # same spread of token lengths, which is what batching strategies are measured on.
        n_filler = int(min(90, rng.lognormal(2.6, 0.8)))
        abstract = "" if rng.random() < 0.1 else " ".join(
            [*world.words(a.primary_words[p], 5), *world.words(a.secondary_words[t], 2),
             *world.words(FILLER, n_filler)]
        ).capitalize() + "."
        entities = json.dumps([{"Label": a.primary[p].title(), "Type": "C", "WikidataId": f"Q{1000 + p}",
                                "Confidence": 1.0, "OccurrenceOffsets": [0], "SurfaceForms": [a.primary[p]]}])
        news.append("\t".join([nid, a.primary[p], a.sub[p][s], title, abstract,
                               f"https://assets.msn.com/labs/mind/{nid}.html", entities, "[]"]))
    if corrupt:
        news.append("N99990\tsports\tfootball\tOnly four columns")
        news.append("N99991\tsports\tfootball\tBroken entities\tabstract\thttps://x\t[{\"Label\": \tx]\t[]")
    start = datetime(2019, 11, 9, tzinfo=timezone.utc)
    behaviors = []
    imp = 1
    for u, seq in enumerate(world.sequences()):
        user = f"U{1000 + u}"
        n_hist = max(1, int(len(seq) * 0.6))
        history = " ".join(ids[i] for i in seq[:n_hist])
        t = start + timedelta(minutes=int(rng.integers(0, 600)))
        rest = seq[n_hist:]
        while rest:
            k = 1 + int(rng.random() < 0.3)
            clicks, rest = rest[:k], rest[k:]
            negatives = rng.choice(size.n_items, size=4, replace=False)
            tokens = [f"{ids[c]}-1" for c in clicks] + [f"{ids[n]}-0" for n in negatives if n not in clicks]
            rng.shuffle(tokens)
            stamp = f"{t.month}/{t.day}/{t.year} {t.strftime('%I').lstrip('0')}:{t.strftime('%M:%S %p')}"
            behaviors.append("\t".join([str(imp), user, stamp, history, " ".join(tokens)]))
            imp += 1
            t += timedelta(hours=int(rng.integers(1, 20)), minutes=int(rng.integers(0, 59)))
    if corrupt:
        behaviors.insert(3, f"{imp}\tU9999\t13/45/2019 9:99:00 XM\t{ids[0]}\t{ids[1]}-1")
        behaviors.insert(5, f"{imp + 1}\tU9998\t11/11/2019 9:00:00 AM\tN424242 {ids[2]}\t{ids[3]}-1 {ids[4]}-0")
        behaviors.insert(7, f"{imp + 2}\tU9997\tmissing columns")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "news.tsv", "\n".join(news) + "\n", gz)
    _write(out_dir / "behaviors.tsv", "\n".join(behaviors) + "\n", gz)
    _planted(out_dir, ids, world, ("topic", "subtopic", "tone"))
    return out_dir


def generate_amazon(out_dir: Path, size: SampleSize, seed: int = 0, category: str = "Beauty",
                    version: str = "2014", corrupt: bool = False, gz: bool = False) -> Path:
    a = AMAZON_ASPECTS
    world = _World(len(a.primary), 3, len(a.secondary), size, seed)
    rng = world.rng
    brands = [f"{name}{k}" for name in ("Aurel", "Verde", "Maxi", "Studio") for k in ("", " Co", " Labs")]
    ids = [f"B00{seed % 10}{i:06d}" for i in range(size.n_items)]
    meta_lines = []
    for i, asin in enumerate(ids):
        p, s, t = world.primary[i], world.sub[i], world.secondary[i]
        brand = brands[t * 3 + int(rng.integers(0, 3))]
        title = " ".join([brand, *world.words(a.secondary_words[t], 1), *world.words(a.primary_words[p], 3)]).title()
        desc = " ".join([*world.words(a.primary_words[p], 6), *world.words(a.secondary_words[t], 3),
                         *world.words(FILLER, 5)]).capitalize() + "."
        path = ["Beauty", a.primary[p].title(), a.sub[p][s]]
        if version == "2014":
            rec = {"asin": asin, "title": title, "price": round(float(rng.uniform(3, 80)), 2),
                   "imUrl": f"http://ecx.images-amazon.com/images/I/{asin}.jpg",
                   "related": {"also_bought": [ids[int(j)] for j in rng.integers(0, size.n_items, 3)]},
                   "salesRank": {category: int(rng.integers(1, 200000))}, "categories": [path], "brand": brand,
                   "description": desc}
            if rng.random() < 0.1:
                del rec["title"]  # like the real 2014 meta, some items have no title
            meta_lines.append(repr(rec))  # Python literal, single quotes: not JSON
        elif version == "2018":
            meta_lines.append(json.dumps({"category": path, "description": [desc], "title": title, "brand": brand,
                                          "feature": [], "rank": "1,234 in Beauty", "asin": asin}))
        else:
            meta_lines.append(json.dumps({"main_category": "All Beauty", "title": title, "features": [],
                                          "description": [desc], "price": None, "store": brand,
                                          "categories": path[1:], "details": {}, "parent_asin": asin}))
    reviews = []
    t0 = 1262304000  # 2010-01-01
    for u, seq in enumerate(world.sequences()):
        user = f"A{u:05d}X{seed}"
        ts = t0 + int(rng.integers(0, 86400 * 300))
        for item in seq:
            ts += int(rng.integers(3600, 86400 * 20))
            rating = float(rng.integers(3, 6))
            if version == "2023":
                rec = {"rating": rating, "title": "Nice", "text": "Works well.", "images": [], "asin": ids[item],
                       "parent_asin": ids[item], "user_id": user, "timestamp": ts * 1000, "helpful_vote": 0,
                       "verified_purchase": True}
            else:
                day = datetime.fromtimestamp(ts, tz=timezone.utc)
                rec = {"reviewerID": user, "asin": ids[item], "reviewerName": f"user {u}", "helpful": [0, 0],
                       "reviewText": "Works well.", "overall": rating, "summary": "Nice",
                       "unixReviewTime": ts, "reviewTime": day.strftime("%m %d, %Y")}
                if version == "2018":
                    rec = {"overall": rating, "verified": True, "reviewTime": rec["reviewTime"], "reviewerID": user,
                           "asin": ids[item], "reviewerName": f"user {u}", "reviewText": "Works well.",
                           "summary": "Nice", "unixReviewTime": ts}
            reviews.append(json.dumps(rec))
    if corrupt:
        reviews.insert(2, '{"reviewerID": "AX", "asin": "B0BROKEN", "overall": 5.0,')
        reviews.insert(4, json.dumps({"reviewerID": "AY", "asin": "B0NOTINMETA", "overall": 4.0,
                                      "unixReviewTime": t0}))
        meta_lines.insert(1, "{'asin': 'B0CUT', 'title': 'unterminated")
    if version == "2014":
        names = (f"reviews_{category}_5.json", f"meta_{category}.json")
    elif version == "2018":
        names = (f"{category}_5.json", f"meta_{category}.json")
    else:
        names = (f"{category}.jsonl", f"meta_{category}.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / names[0], "\n".join(reviews) + "\n", gz)
    _write(out_dir / names[1], "\n".join(meta_lines) + "\n", gz)
    _planted(out_dir, ids, world, ("product_type", "subcategory", "brand_family"))
    return out_dir


ARTICLE_COLUMNS = ("article_id,product_code,prod_name,product_type_no,product_type_name,product_group_name,"
                   "graphical_appearance_no,graphical_appearance_name,colour_group_code,colour_group_name,"
                   "perceived_colour_value_id,perceived_colour_value_name,perceived_colour_master_id,"
                   "perceived_colour_master_name,department_no,department_name,index_code,index_name,"
                   "index_group_no,index_group_name,section_no,section_name,garment_group_no,garment_group_name,"
                   "detail_desc").split(",")


def generate_hm(out_dir: Path, size: SampleSize, seed: int = 0, corrupt: bool = False, gz: bool = False) -> Path:
    world = _World(len(HM_PRODUCT_TYPES), len(HM_GRAPHICS), len(HM_COLOURS), size, seed)
    rng = world.rng
    ids = [f"0{108775000 + 1000 * i + int(rng.integers(1, 30)):09d}" for i in range(size.n_items)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ARTICLE_COLUMNS)
    for i, art in enumerate(ids):
        p, g, c = world.primary[i], world.sub[i], world.secondary[i]
        ptype, group, words = HM_PRODUCT_TYPES[p]
        colour, value, cwords = HM_COLOURS[c]
        index = HM_INDEX[int(rng.integers(0, len(HM_INDEX)))]
        desc = (f"{' '.join(world.words(cwords, 1)).capitalize()} {' '.join(world.words(words, 4))}, "
                f"{HM_GRAPHICS[g].lower()} {' '.join(world.words(words, 2))}. {' '.join(world.words(FILLER, 3))}")
        if rng.random() < 0.05:
            desc += "\nSecond line of the description, inside quotes"
        w.writerow([art, art[:7], f"{colour} {ptype}", 250 + p, ptype, group, 1010016 + g, HM_GRAPHICS[g], 9 + c,
                    colour, 4 + c, value, 5 + c, colour, 1676 + p, f"Dept {ptype}", "A", index, 1, index, 16,
                    f"Section {p}", 1002 + p, f"Garment {group}", desc])
    if corrupt:
        w.writerow(["0999999999", "0999999", "Broken", "252"])  # too few columns
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "articles.csv", buf.getvalue(), gz)
    if world.large():
        _hm_large(out_dir, world, ids, gz, corrupt)
        _planted(out_dir, ids, world, ("product_type", "graphical_appearance", "colour"))
        return out_dir

    customers = [f"{int(rng.integers(0, 2**62)):016x}" * 4 for _ in range(size.n_users)]
    cbuf = io.StringIO()
    cw = csv.writer(cbuf, lineterminator="\n")
    cw.writerow(["customer_id", "FN", "Active", "club_member_status", "fashion_news_frequency", "age", "postal_code"])
    for cid in customers:
        cw.writerow([cid, "" if rng.random() < 0.6 else "1.0", "" if rng.random() < 0.6 else "1.0", "ACTIVE",
                     "NONE", int(rng.integers(18, 70)), f"{int(rng.integers(0, 2**62)):016x}" * 4])
    _write(out_dir / "customers.csv", cbuf.getvalue(), gz)

    day0 = datetime(2018, 9, 20)
    tx = ["t_dat,customer_id,article_id,price,sales_channel_id"]
    events = []
    for u, seq in enumerate(world.sequences()):
        d = int(rng.integers(0, 200))
        for item in seq:
            d += int(rng.integers(0, 15))
            events.append((d, u, item))
    events.sort(key=lambda e: e[0])  # the real file is ordered by date
    for d, u, item in events:
        day = (day0 + timedelta(days=d)).strftime("%Y-%m-%d")
        tx.append(f"{day},{customers[u]},{ids[item]},{rng.uniform(0.005, 0.1):.16f},{int(rng.integers(1, 3))}")
    if corrupt:
        tx.insert(3, f"2018-13-45,{customers[0]},{ids[0]},0.05,2")
        tx.insert(5, f"2018-09-21,{customers[0]},0000000001,0.05,2")
        tx.insert(7, f"2018-09-21,{customers[0]},{ids[0]},0.05")
        tx.insert(9, f"2018-09-21,{customers[0]},{ids[0]},0.05,2,extra")
    _write(out_dir / "transactions_train.csv", "\n".join(tx) + "\n", gz)
    _planted(out_dir, ids, world, ("product_type", "graphical_appearance", "colour"))
    return out_dir


def _hm_large(out_dir: Path, world: _World, ids: list[str], gz: bool, corrupt: bool) -> None:
    """customers.csv and transactions_train.csv of a real-size H&M sample, the same columns and formats as the
    per-row writer, drawn by `_World.event_arrays` and written by polars."""
    import polars as pl

    rng, n = world.rng, world.size.n_users
    hexes = lambda: pl.Series([f"{v:016x}" * 4 for v in rng.integers(0, 2**62, n).tolist()])  # noqa: E731
    customers = hexes()
    blank_or_one = lambda: pl.Series([None if blank else "1.0" for blank in (rng.random(n) < 0.6).tolist()],  # noqa: E731
                                     dtype=pl.String)
    table = pl.DataFrame({"customer_id": customers, "FN": blank_or_one(), "Active": blank_or_one(),
                          "club_member_status": "ACTIVE", "fashion_news_frequency": "NONE",
                          "age": rng.integers(18, 70, n), "postal_code": hexes()})
    _write_frame(out_dir / "customers.csv", table, gz)
    del table

    lengths, items = world.event_arrays()
    cap = items.shape[0]
    days = (rng.integers(0, 200, n)[None, :] + np.cumsum(rng.integers(0, 15, (cap, n)), axis=0)).astype(np.int32)
    valid = items >= 0
    user = np.broadcast_to(np.arange(n, dtype=np.int32), items.shape)[valid]  # users' events, step by step
    day, item = days[valid], items[valid]
    del days, items, valid
    order = np.argsort(day, kind="stable")  # the real file is ordered by date
    user, day, item = user[order], day[order], item[order]
    dates = pl.Series([(datetime(2018, 9, 20) + timedelta(days=d)).strftime("%Y-%m-%d")
                       for d in range(int(day.max()) + 1)])
    frame = pl.DataFrame({
        "t_dat": dates.gather(day), "customer_id": customers.gather(user), "article_id": pl.Series(ids).gather(item),
        "price": rng.uniform(0.005, 0.1, len(day)), "sales_channel_id": rng.integers(1, 3, len(day))})
    c, a = customers[0], ids[0]
    bad = {3: f"2018-13-45,{c},{a},0.05,2", 5: f"2018-09-21,{c},0000000001,0.05,2", 7: f"2018-09-21,{c},{a},0.05",
           9: f"2018-09-21,{c},{a},0.05,2,extra"} if corrupt else {}  # the per-row writer's, at its lines
    _write_frame(out_dir / "transactions_train.csv", frame, gz, bad)


def _write_frame(path: Path, frame, gz: bool, inserts: dict[int, str] | None = None) -> None:
    """A frame as CSV (16 decimals, as the per-row writers format floats), atomically, gzipped where asked;
    `inserts`: {line index (0 = header): raw line} put there, in ascending order, as list.insert would."""
    if gz:
        path = path.with_name(path.name + ".gz")
    inserts = inserts or {}
    head = max(inserts, default=0)
    with atomic_path(path) as tmp, (gzip.GzipFile(tmp, "wb", mtime=0) if gz else open(tmp, "wb")) as fh:
        lines = frame.head(head).write_csv(float_precision=16).splitlines()
        for at in sorted(inserts):
            lines.insert(at, inserts[at])
        fh.write(("\n".join(lines) + "\n").encode())
        frame.slice(head).write_csv(fh, float_precision=16, include_header=False)


def generate(source: str, out_dir: Path, size: str | SampleSize = "demo", seed: int = 0,
             corrupt: bool = True, **options: object) -> Path:
    """Generate one bundled sample dataset in the original format of a registered source ('mind', 'amazon',
    'hm', …): its declared generator (ops.ingest.source.Source.generate_sample)."""
    from ops.ingest import get_source

    declared = get_source(source)
    if declared.generate_sample is None:
        raise ValueError(f"source {source!r} declares no sample generator")
    return declared.generate_sample(Path(out_dir), SIZES[size] if isinstance(size, str) else size, seed, corrupt,
                                    **options)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from ops.datasets import load_registry

    ap = argparse.ArgumentParser(description="Generate the bundled sample datasets in their original formats.")
    ap.add_argument("--raw-root", default="data/raw")
    ap.add_argument("--size", choices=sorted(SIZES), default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="regenerate even if the files exist")
    args = ap.parse_args(argv)
    for spec in load_registry().values():
        if not spec.sample:
            continue
        target = spec.raw_path(args.raw_root)
        if target.is_dir() and any(target.iterdir()) and not args.force:
            print(f"{spec.name}: present at {target}")
            continue
        generate(spec.source, target, args.size, args.seed, **spec.sample_options())
        print(f"{spec.name}: generated ({args.size}) at {target}")


if __name__ == "__main__":
    main()
