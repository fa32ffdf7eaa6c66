"""A damaged .gz (a download cut short, a flipped byte) fails with one IngestError naming the file, whichever
reader meets it: line iteration, the csv module, the decompressed copy polars scans, the Amazon block reader."""
import gzip

import pytest

from ops.ingest.amazon import load_amazon
from ops.ingest.common import IngestError
from ops.ingest.hm import load_hm
from ops.ingest.mind import load_mind
from ops.sample import generate

LOADERS = {
    "mind": lambda d: load_mind(d, "t"),
    "amazon": lambda d: load_amazon(d, "t", "Beauty", "2014"),
    "hm": lambda d: load_hm(d, "t"),
}


def _damage(path, how):
    data = path.read_bytes()
    if how == "cut":  # cut short: the deflate stream ends early
        path.write_bytes(data[: len(data) * 2 // 3])
    else:  # one byte of the CRC trailer flipped: the data inflates, the check fails at the end
        path.write_bytes(data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:])


@pytest.mark.parametrize("how", ["cut", "crc"])
@pytest.mark.parametrize("source", sorted(LOADERS))
def test_damaged_gzip_is_one_clear_error_for_every_file(tmp_path, source, how):
    directory = generate(source, tmp_path / source, "tiny", seed=0, corrupt=False, gz=True)
    files = sorted(p for p in directory.iterdir() if p.suffix == ".gz")
    assert len(files) >= 2
    LOADERS[source](directory)  # intact: loads
    for path in files:
        original = path.read_bytes()
        gzip.decompress(original)
        _damage(path, how)
        with pytest.raises(IngestError, match=rf"{path.name}: damaged or incomplete gzip file .*download it again"):
            LOADERS[source](directory)
        path.write_bytes(original)
