"""oldphoto.storage against a real moto S3 server (server mode on 127.0.0.1) and local folders."""
from __future__ import annotations

import hashlib
import logging
import pickle

import pytest

from oldphoto.lifecycle import list_inputs
from oldphoto.storage import StorageError, is_remote, normalize, open_storage
from services import FAKE_AWS, make_bucket


@pytest.fixture(scope="module")
def bucket(moto_s3):
    make_bucket(moto_s3, "archive")
    return "s3://archive"


def test_s3_roundtrip_listing_and_layout(bucket):
    st = open_storage(f"{bucket}/night1/")
    assert st.protocol == "s3"
    files = {"b/2.TIF": b"two", "a.jpg": b"one", "notes.txt": b"x", ".hidden/3.png": b"h"}
    for rel, data in files.items():
        st.write_bytes(f"{bucket}/night1/{rel}", data)

    assert st.find(f"{bucket}/night1/") == [f"{bucket}/night1/{r}" for r in sorted(files)]
    imgs = [it.uri for it in list_inputs([f"{bucket}/night1/"]).items]      # the inputs among them
    assert imgs == [f"{bucket}/night1/a.jpg", f"{bucket}/night1/b/2.TIF"]
    assert st.read_bytes(imgs[1]) == b"two"
    assert st.relative(f"{bucket}/night1/", imgs[1]) == "b/2.TIF"
    assert st.exists(imgs[0]) and not st.exists(f"{bucket}/night1/zzz.jpg")
    assert st.size(imgs[0]) == 3
    assert st.sha256(imgs[0]) == hashlib.sha256(b"one").hexdigest()

    # a file written after the first listing is seen by the next one (no stale listing cache)
    st.write_bytes(f"{bucket}/night1/c.jpg", b"three")
    assert f"{bucket}/night1/c.jpg" in st.find(f"{bucket}/night1")

    # outputs: relpath -> bytes under out/NAME/
    target = st.join(f"{bucket}/out/a", "faces", "face_01_after.png")
    st.write_bytes(target, b"F")
    assert target == f"{bucket}/out/a/faces/face_01_after.png"
    assert st.read_bytes(target) == b"F"


def test_s3_missing_things_are_clear_errors(bucket):
    st = open_storage(bucket)
    with pytest.raises(StorageError, match="not found"):
        st.read_bytes(f"{bucket}/nope/missing.jpg")
    with pytest.raises(StorageError, match="input location not found"):
        st.find("s3://no-such-bucket-here/x/")


def test_storage_pickles_without_credentials(bucket, caplog):
    st = open_storage(bucket)
    blob = pickle.dumps(st)
    for secret in (FAKE_AWS["AWS_SECRET_ACCESS_KEY"], FAKE_AWS["AWS_ACCESS_KEY_ID"]):
        assert secret.encode() not in blob
    with caplog.at_level(logging.DEBUG):
        st2 = pickle.loads(blob)
        st2.write_bytes(f"{bucket}/p/x.png", b"data")
        assert st2.read_bytes(f"{bucket}/p/x.png") == b"data"
    assert FAKE_AWS["AWS_SECRET_ACCESS_KEY"] not in caplog.text


def test_local_paths_and_file_uris(tmp_path):
    src = tmp_path / "scans"
    (src / "sub").mkdir(parents=True)
    (src / "x.png").write_bytes(b"1")
    (src / "sub" / "y.JPG").write_bytes(b"2")
    (src / "readme.md").write_bytes(b"3")
    for root in (str(src), f"file://{src}"):
        st = open_storage(root)
        assert st.protocol == "file" and not is_remote(root)
        imgs = [it.uri for it in list_inputs([root]).items]
        assert imgs == [str(src / "sub" / "y.JPG"), str(src / "x.png")]
        assert st.relative(root, imgs[0]) == "sub/y.JPG"
    st = open_storage(f"file://{tmp_path}/out")
    st.write_bytes(st.join(f"file://{tmp_path}/out/x", "mask.png"), b"m")
    assert (tmp_path / "out" / "x" / "mask.png").read_bytes() == b"m"
    assert not list((tmp_path / "out" / "x").glob("*.part-*"))
    assert normalize(f"file://{src}") == str(src) and normalize("s3a://b/k") == "s3://b/k"
    assert st.find(str(src / "x.png")) == [str(src / "x.png")]
