"""Token shards in llm.c's format, checked against a writer and a reader that follow
llm.c's own code (dev/data/data_common.py and train_gpt2.py's shard loader)."""

from __future__ import annotations

import numpy as np
import pytest

from cllm.core.dataset import TokenView
from cllm.core.errors import CorpusError
from cllm.core.shards import UINT16, UINT32, Shard, ShardWriter, kind_for

LLMC_HEADERS = {"gpt-2": (20240520, 1, np.uint16), "llama-3": (20240801, 7, np.uint32)}


def llmc_write_datafile(filename, toks, model_desc="gpt-2"):
    """llm.c's write_datafile, line for line in what it writes."""
    magic, version, dtype = LLMC_HEADERS[model_desc]
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = magic, version, len(toks)
    toks_np = np.array(toks, dtype=dtype)
    with open(filename, "wb") as f:
        f.write(header.tobytes())
        f.write(toks_np.tobytes())


def llmc_load_data_shard(filename, magic=20240520, version=1, dtype=np.uint16):
    """llm.c's _load_data_shard (train_gpt2.py): the header checked, then the tokens."""
    with open(filename, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype=np.int32)
        assert header[0] == magic, "magic number mismatch in the data .bin file"
        assert header[1] == version, "unsupported version"
        ntok = header[2]
        tokens = np.frombuffer(f.read(), dtype=dtype)
    assert len(tokens) == ntok, "number of tokens read does not match header?"
    return tokens


@pytest.mark.parametrize("desc", ["gpt-2", "llama-3"])
def test_reads_what_llmc_writes(tmp_path, desc):
    toks = np.random.default_rng(0).integers(0, 50257 if desc == "gpt-2" else 128256, 1000)
    llmc_write_datafile(tmp_path / "x.bin", toks.tolist(), desc)
    shard = Shard(tmp_path / "x.bin")
    assert shard.kind == (UINT16 if desc == "gpt-2" else UINT32)
    assert np.array_equal(shard.tokens, toks)


@pytest.mark.parametrize("vocab", [300, 65536, 70000])
def test_llmc_reads_what_cllm_writes(tmp_path, vocab):
    kind = kind_for(vocab)
    toks = np.random.default_rng(1).integers(0, vocab, 5000)
    writer = ShardWriter(tmp_path / "y.bin", kind)
    writer.write(toks[:1234])
    writer.write(toks[1234:])
    writer.close()
    read = llmc_load_data_shard(tmp_path / "y.bin", kind.magic, kind.version, kind.dtype)
    assert np.array_equal(read, toks)
    reference = tmp_path / "ref.bin"
    llmc_write_datafile(reference, toks.tolist(), "gpt-2" if vocab <= 65536 else "llama-3")
    assert reference.read_bytes() == (tmp_path / "y.bin").read_bytes()


def broken(tmp_path, how: str):
    path = tmp_path / f"{how}.bin"
    llmc_write_datafile(path, list(range(100)))
    data = bytearray(path.read_bytes())
    if how == "short":
        data = data[:-10]
    elif how == "magic":
        data[0:4] = np.int32(12345).tobytes()
    elif how == "version":
        data[4:8] = np.int32(2).tobytes()
    elif how == "header":
        data = data[:100]
    elif how == "extra":
        data += b"\0\0\0\0"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how, message", [
    ("short", "cut short: the header counts 100 tokens"), ("magic", "not a token shard (magic number 12345"),
    ("version", "token shard version 2 is not supported"), ("header", "cut short: 100 bytes"),
    ("extra", "4 bytes after the 100 tokens")])
def test_broken_shards_are_named(tmp_path, how, message):
    path = broken(tmp_path, how)
    with pytest.raises(CorpusError) as info:
        Shard(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_view_reads_across_shards(tmp_path):
    toks = np.arange(1000) % 65536
    shards = []
    for i, (a, b) in enumerate([(0, 300), (300, 301), (301, 1000)]):
        llmc_write_datafile(tmp_path / f"s{i}.bin", toks[a:b].tolist())
        shards.append(Shard(tmp_path / f"s{i}.bin"))
    view = TokenView(shards)
    assert len(view) == 1000
    for a, b in [(0, 10), (295, 305), (299, 302), (300, 301), (0, 1000), (990, 1000), (5, 5)]:
        assert np.array_equal(view[a:b], toks[a:b]), (a, b)
    part = view.part(250, 800)
    assert len(part) == 550 and np.array_equal(part[40:60], toks[290:310])
