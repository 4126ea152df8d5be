"""MNIST IDX loading: validation on tiny hand-written files, resolution order, the real files."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from odebench.data import (
    MNIST_FILES,
    PUBLISHED_MD5,
    MNISTError,
    fetch_mnist,
    find_mnist_dir,
    load_mnist,
    locate_mnist,
    mnist_status,
    mnist_subset,
    normalize_images,
    read_idx,
)

SIZES = {"train": 30, "test": 12}


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    """An IDX file: magic (0, 0, dtype code 0x08, ndim), big-endian dims, uint8 data."""
    array = np.asarray(array, dtype=np.uint8)
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write(path: Path, data: bytes) -> Path:
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def make_split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n, dtype=np.uint8) % 10
    rng.shuffle(labels)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), labels


@pytest.fixture
def tiny(tmp_path):
    """Writes a tiny MNIST (gz or raw) into a folder; returns (writer, arrays)."""
    rng = np.random.default_rng(0)
    arrays = {split: make_split(rng, n) for split, n in SIZES.items()}

    def make(folder: Path, gz: bool = True) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for split, (images_name, labels_name) in MNIST_FILES.items():
            suffix = ".gz" if gz else ""
            write(folder / (images_name + suffix), idx_bytes(arrays[split][0]))
            write(folder / (labels_name + suffix), idx_bytes(arrays[split][1]))
        return folder

    return make, arrays


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No $ODEBENCH_DATA and an empty user cache unless a test sets them."""
    monkeypatch.delenv("ODEBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def sums_of(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def assert_one_line_naming(err: pytest.ExceptionInfo, name: str) -> None:
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "\n" not in message
    assert name in message, message


# -- valid files ------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_valid_files_load(tiny, tmp_path, gz):
    make, arrays = tiny
    folder = make(tmp_path / "mnist", gz=gz)
    sums = sums_of(folder) if gz else PUBLISHED_MD5  # raw files carry no published sum
    for split in SIZES:
        images, labels = load_mnist(split, folder, checksums=sums)
        assert images.dtype == np.uint8 and labels.dtype == np.uint8
        assert images.shape == (SIZES[split], 28, 28) and labels.shape == (SIZES[split],)
        np.testing.assert_array_equal(images, arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])


def test_gz_preferred_over_raw_and_status(tiny, tmp_path):
    make, _ = tiny
    folder = make(tmp_path / "mnist", gz=False)
    status = mnist_status(folder)
    assert str(folder) in status and "--data-dir" in status and "uncompressed" in status
    assert "30 train + 12 test" in status
    # A gz file next to the raw one is the one read (and checked against the published sum).
    write(folder / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(12)))
    with pytest.raises(MNISTError) as err:
        load_mnist("test", folder)
    assert "MD5 mismatch" in str(err.value)
    assert_one_line_naming(err, "t10k-labels-idx1-ubyte.gz")


# -- broken files -----------------------------------------------------------------------------


def test_bad_checksum(tiny, tmp_path):
    make, _ = tiny
    folder = make(tmp_path / "mnist")
    with pytest.raises(MNISTError, match="MD5 mismatch") as err:  # tiny files are not the published ones
        load_mnist("train", folder)
    assert_one_line_naming(err, "train-images-idx3-ubyte.gz")
    sums = sums_of(folder)
    sums["train-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(MNISTError, match="MD5 mismatch") as err:
        load_mnist("train", folder, checksums=sums)
    assert_one_line_naming(err, "train-labels-idx1-ubyte.gz")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("keep", [2, 10, -100], ids=["in-magic", "in-dims", "in-data"])
def test_truncated(tiny, tmp_path, gz, keep):
    make, arrays = tiny
    folder = make(tmp_path / "mnist", gz=False)
    name = "train-images-idx3-ubyte"
    full = (folder / name).read_bytes()
    (folder / name).unlink()
    write(folder / (name + (".gz" if gz else "")), full[:keep])
    with pytest.raises(MNISTError) as err:
        load_mnist("train", folder, checksums=None)
    assert "truncated" in str(err.value)
    assert_one_line_naming(err, name)


def test_truncated_gzip_stream(tiny, tmp_path):
    """A gz file cut short: the compressed stream ends early."""
    make, _ = tiny
    folder = make(tmp_path / "mnist")
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(MNISTError) as err:
        load_mnist("test", folder, checksums=None)
    assert_one_line_naming(err, path.name)


def test_trailing_data(tiny, tmp_path):
    make, _ = tiny
    folder = make(tmp_path / "mnist", gz=False)
    path = folder / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(MNISTError, match="trailing data") as err:
        load_mnist("test", folder)
    assert_one_line_naming(err, path.name)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize(
    "magic, match",
    [
        (b"\xde\xad\xbe\xef", "not an IDX file"),
        (bytes([0, 0, 0x08, 3]), "wrong magic number"),  # an images magic on a labels file
        (bytes([0, 0, 0x0D, 1]), "wrong magic number"),  # float32 labels
    ],
    ids=["garbage", "images-magic", "float-dtype"],
)
def test_wrong_magic(tiny, tmp_path, gz, magic, match):
    make, arrays = tiny
    folder = make(tmp_path / "mnist", gz=gz)
    name = "train-labels-idx1-ubyte" + (".gz" if gz else "")
    write(folder / name, idx_bytes(arrays["train"][1], magic=magic))
    with pytest.raises(MNISTError, match=match) as err:
        load_mnist("train", folder, checksums=None)
    assert_one_line_naming(err, name)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_forged_huge_dims_rejected_before_allocation(tmp_path, gz):
    """A header claiming 2**32-1 images of 28×28 over a few bytes of data is refused from its size."""
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**32 - 1, 28, 28) + bytes(100)
    path = write(tmp_path / name, data)
    with pytest.raises(MNISTError) as err:
        read_idx(path, expected_ndim=3, expected_dtype=np.uint8)
    assert_one_line_naming(err, name)


def test_label_count_differs_from_image_count(tiny, tmp_path):
    make, arrays = tiny
    folder = make(tmp_path / "mnist")
    write(folder / "train-labels-idx1-ubyte.gz", idx_bytes(arrays["train"][1][:-1]))
    with pytest.raises(MNISTError, match="29 labels for 30 images") as err:
        load_mnist("train", folder, checksums=None)
    assert_one_line_naming(err, "train-labels-idx1-ubyte.gz")


def test_label_out_of_range(tiny, tmp_path):
    make, arrays = tiny
    folder = make(tmp_path / "mnist", gz=False)
    labels = arrays["test"][1].copy()
    labels[5] = 10
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(labels))
    with pytest.raises(MNISTError, match="label 10 at index 5") as err:
        load_mnist("test", folder)
    assert_one_line_naming(err, "t10k-labels-idx1-ubyte")


def test_wrong_image_size(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write(folder / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((3, 32, 32))))
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(3)))
    with pytest.raises(MNISTError, match=r"\(28, 28\)") as err:
        load_mnist("test", folder)
    assert_one_line_naming(err, "t10k-images-idx3-ubyte")


# -- where the files are found ------------------------------------------------------------------


def test_resolution_order(tiny, tmp_path, monkeypatch):
    make, _ = tiny
    cache = make(tmp_path / "xdg-cache" / "odebench" / "data" / "mnist", gz=False)
    assert locate_mnist() == (cache, "user cache")

    env_root = tmp_path / "env"
    env_mnist = make(env_root / "mnist", gz=False)
    monkeypatch.setenv("ODEBENCH_DATA", str(env_root))  # a folder holding mnist/
    assert locate_mnist() == (env_mnist, "$ODEBENCH_DATA")
    monkeypatch.setenv("ODEBENCH_DATA", str(env_mnist))  # the mnist folder itself
    assert locate_mnist() == (env_mnist, "$ODEBENCH_DATA")

    explicit = make(tmp_path / "explicit", gz=False)
    assert locate_mnist(explicit) == (explicit, "--data-dir")
    assert find_mnist_dir(explicit, splits=["test"]) == explicit
    assert locate_mnist(env_root) == (env_mnist, "--data-dir")  # a folder holding mnist/

    # $ODEBENCH_DATA without the files falls through to the cache.
    monkeypatch.setenv("ODEBENCH_DATA", str(tmp_path / "nowhere"))
    assert locate_mnist() == (cache, "user cache")


def test_explicit_dir_without_files_does_not_fall_back(tiny, tmp_path):
    make, _ = tiny
    make(tmp_path / "xdg-cache" / "odebench" / "data" / "mnist", gz=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MNISTError) as err:
        load_mnist("train", empty)
    message = str(err.value)
    assert "\n" not in message and str(empty) in message
    assert "train-images-idx3-ubyte[.gz]" in message and "train-labels-idx1-ubyte[.gz]" in message


def test_nothing_found_message(tmp_path):
    with pytest.raises(MNISTError) as err:
        mnist_status()
    message = str(err.value)
    assert "\n" not in message
    assert "ODEBENCH_DATA" in message and "--data-dir" in message and "t10k-images-idx3-ubyte" in message


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="valid: train, test"):
        load_mnist("validation", tmp_path)


# -- fetch ----------------------------------------------------------------------------------------


def test_fetch_from_mirror_and_failure(tiny, tmp_path):
    make, arrays = tiny
    mirror = make(tmp_path / "mirror")
    sums = sums_of(mirror)
    dest = fetch_mnist(
        tmp_path / "dest",
        mirrors=[tmp_path.as_uri() + "/nowhere/", mirror.as_uri() + "/"],
        checksums=sums,
        timeout=2,
    )
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)
    np.testing.assert_array_equal(load_mnist("test", dest, checksums=sums)[0], arrays["test"][0])
    fetch_mnist(dest, mirrors=[], checksums=sums)  # already there and verified: no download needed

    bad = dict(sums, **{"t10k-images-idx3-ubyte.gz": "0" * 32})
    with pytest.raises(MNISTError) as err:
        fetch_mnist(tmp_path / "dest2", mirrors=[mirror.as_uri() + "/"], checksums=bad, timeout=2)
    message = str(err.value)
    assert "\n" not in message and "t10k-images-idx3-ubyte.gz" in message and "dest2" in message
    assert "train-labels-idx1-ubyte.gz" in message  # lists every expected name
    assert not any(p.name.endswith(".part") for p in (tmp_path / "dest2").iterdir())


# -- subsets and normalisation --------------------------------------------------------------------


def test_subset_and_normalize(tiny):
    _, arrays = tiny
    images, labels = arrays["train"]
    first = mnist_subset(images, labels, 7)
    np.testing.assert_array_equal(first[1], labels[:7])
    a = mnist_subset(images, labels, 20, seed=3)
    b = mnist_subset(images, labels, 20, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.bincount(a[1], minlength=10).tolist() == [2] * 10
    assert (
        np.bincount(mnist_subset(images, labels, 13, seed=1)[1], minlength=10).tolist() == [2] * 3 + [1] * 7
    )
    with pytest.raises(ValueError):
        mnist_subset(images, labels, 31)
    with pytest.raises(ValueError, match="digit 9"):
        mnist_subset(images, np.minimum(labels, 8), 10, seed=0)  # no nines at all

    x = normalize_images(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.shape == (1, 1, 1, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [-0.1307 / 0.3081, (1 - 0.1307) / 0.3081], rtol=1e-6)


# -- the real files -------------------------------------------------------------------------------


def real_mnist_dir() -> Path | None:
    candidates = []
    if os.environ.get("ODEBENCH_DATA"):
        candidates.append(Path(os.environ["ODEBENCH_DATA"]))
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist")
    for candidate in candidates:
        try:
            return find_mnist_dir(candidate)
        except MNISTError:
            continue
    return None


REAL = real_mnist_dir()


@pytest.mark.skipif(REAL is None, reason="MNIST not found ($ODEBENCH_DATA or ../shared/data/mnist)")
def test_real_mnist():
    assert REAL is not None
    for name, md5 in PUBLISHED_MD5.items():
        assert hashlib.md5((REAL / name).read_bytes()).hexdigest() == md5
    if (REAL / "MD5SUMS").is_file():
        listed = dict(
            line.split()[::-1] for line in (REAL / "MD5SUMS").read_text().splitlines() if line.strip()
        )
        assert listed == PUBLISHED_MD5
    for split, n in {"train": 60_000, "test": 10_000}.items():
        images, labels = load_mnist(split, REAL)  # verifies the published MD5 sums
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.uint8
        assert labels.max() == 9 and labels.min() == 0
        assert np.bincount(labels).min() > n // 20
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the first test digits
