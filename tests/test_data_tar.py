"""Shard paths (folders, globs, brace ranges) and the tar sample reader, against
Python's `tarfile` and hand-written expectations."""

import io
import os
import tarfile

import pytest

from mmjax.data import paths, tar


def _write_tar(path, files: list[tuple[str, bytes]], fmt=tarfile.PAX_FORMAT) -> None:
    with tarfile.open(path, "w", format=fmt) as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_expand_braces_like_bash():
    assert paths.expand_braces("s/{00008..00011}.tar") == [
        "s/00008.tar",
        "s/00009.tar",
        "s/00010.tar",
        "s/00011.tar",
    ]
    assert paths.expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert paths.expand_braces("{3..1}") == ["3", "2", "1"]
    assert paths.expand_braces("plain.tar") == ["plain.tar"]


def test_list_files_folder_glob_range_and_missing(tmp_path):
    for name in ("00000.tar", "00001.tar", "00002.tar", "00000_stats.json", "x.parquet"):
        (tmp_path / name).write_bytes(b"")
    want = [str(tmp_path / f"0000{i}.tar") for i in range(3)]
    assert paths.list_files(str(tmp_path), ".tar") == want
    assert paths.list_files(str(tmp_path / "*.tar")) == want
    assert paths.list_files(str(tmp_path / "{00000..00002}.tar")) == want
    assert paths.list_files(f"{tmp_path}/00002.tar;{tmp_path}/00000.tar") == [want[0], want[2]]
    missing = str(tmp_path / "nothing-{00..03}.tar")
    with pytest.raises(FileNotFoundError, match="nothing-"):
        paths.list_files(missing)
    with pytest.raises(ValueError, match="empty"):
        paths.list_files("")


def test_remote_paths_go_through_fsspec(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for i in range(3):
        fs.pipe(f"/bucket/{i:05d}.tar", b"x")
    assert paths.list_files("memory://bucket/{00000..00001}.tar") == [
        "memory://bucket/00000.tar",
        "memory://bucket/00001.tar",
    ]
    assert len(paths.list_files("memory://bucket", ".tar")) == 3
    with paths.open_file("memory://bucket/00002.tar") as f:
        assert f.read() == b"x"


FILES = [
    ("000000001.jpg", b"\xff\xd8image one"),
    ("000000001.txt", b"caption one"),
    ("000000001.json", b"{}"),
    ("000000002.jpg", b"image two" * 100),
    ("000000002.txt", b""),
    ("dir/" + "k" * 120 + ".jpg", b"long name"),  # needs a pax / GNU long-name header
    ("dir/" + "k" * 120 + ".txt", b"long caption"),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_samples_group_files_like_webdataset(tmp_path, fmt):
    files = FILES if fmt != tarfile.USTAR_FORMAT else FILES[:5]  # ustar: names <= 255
    path = tmp_path / "s.tar"
    _write_tar(path, files, fmt)
    with open(path, "rb") as f:
        got = [s for s, _ in tar.samples(f)]
    assert [s["__key__"] for s in got] == ["000000001", "000000002", "dir/" + "k" * 120][: len(got)]
    assert got[0] == {
        "__key__": "000000001",
        "jpg": b"\xff\xd8image one",
        "txt": b"caption one",
        "json": b"{}",
    }
    assert got[1]["txt"] == b"" and got[1]["jpg"] == b"image two" * 100
    # Offsets agree with tarfile's member offsets (where each next sample's headers begin).
    with tarfile.open(path) as t:
        starts = {tar.split_name(m.name)[0]: m.offset for m in reversed(t.getmembers())}
    with open(path, "rb") as f:
        offsets = [o for _, o in tar.samples(f)]
    keys = [s["__key__"] for s in got]
    assert offsets[:-1] == [starts[k] for k in keys[1:]] and offsets[-1] == -1


def test_resuming_at_an_offset_reads_on_exactly(tmp_path):
    path = tmp_path / "s.tar"
    _write_tar(path, FILES)
    with open(path, "rb") as f:
        everything = list(tar.samples(f))
    with open(path, "rb") as f:
        f.seek(everything[0][1])
        rest = list(tar.samples(f, everything[0][1]))
    assert rest == everything[1:]


def test_truncated_and_corrupt_shards_raise(tmp_path):
    path = tmp_path / "s.tar"
    _write_tar(path, FILES)
    data = path.read_bytes()
    for broken in (data[:1500], data[:700], b"\x01" * 1024 + data[1024:]):
        with pytest.raises(tar.BadShard):
            list(tar.samples(io.BytesIO(broken)))
    assert os.path.getsize(path) % 512 == 0
