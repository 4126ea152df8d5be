"""MNIST from the original IDX files, validated before anything is allocated (DESIGN §6, mnist).

Where the files are looked for, in order:

1. an explicit ``data_dir`` (``odebench ... --data-dir``): no fallback when it is given;
2. ``$ODEBENCH_DATA``: the mnist folder itself or a folder holding ``mnist/``;
3. the user cache, ``$XDG_CACHE_HOME/odebench/data/mnist`` (``~/.cache/odebench/data/mnist``),
   which is where :func:`fetch_mnist` puts them.

Each of the four files may be gzipped (``*.gz``, preferred: it is checked against the published
MD5 sum) or uncompressed. Every file's IDX header (magic number, dtype code, number of dimensions,
dims) is checked against the file's size before its payload is read; label files must match
their image files in count and hold digits 0..9. A file that fails any check raises
:class:`MNISTError`, a ``ValueError`` whose one-line message names the file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

#: split → (images file, labels file), the original names without ``.gz``.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = tuple(MNIST_FILES)

#: The published MD5 sums of the four gzipped files.
PUBLISHED_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: Number of examples per split in the real dataset.
MNIST_SIZES: dict[str, int] = {"train": 60_000, "test": 10_000}

#: Mirrors serving the original gzipped files (yann.lecun.com itself now refuses most clients).
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Normalisation of torchdiffeq's odenet_mnist example (``transforms.Normalize((0.1307,), (0.3081,))``).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

ENV_VAR = "ODEBENCH_DATA"

#: IDX dtype code → numpy dtype (big-endian on disk).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
#: Deflate cannot compress better than about 1032:1; a header claiming more is forged.
_MAX_GZIP_RATIO = 1032
_DOWNLOAD_LIMIT = 64 * 2**20  # bytes per file; the largest MNIST file is 9.9 MB


class MNISTError(ValueError):
    """A missing, truncated, forged, mislabelled or corrupted MNIST file."""


# -- locating the files ---------------------------------------------------------------------


def cache_dir() -> Path:
    """The user cache folder for MNIST: ``$XDG_CACHE_HOME/odebench/data/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "odebench" / "data" / "mnist"


def _expected_names(splits: Sequence[str]) -> list[str]:
    return [name for split in splits for name in MNIST_FILES[split]]


def _file_in(folder: Path, name: str) -> Path | None:
    """``name.gz`` (preferred: it has a published checksum) or ``name`` in ``folder``, if present."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _check_splits(splits: Sequence[str]) -> None:
    for split in splits:
        if split not in MNIST_FILES:
            raise ValueError(f"unknown MNIST split {split!r}; valid: {', '.join(SPLITS)}")


def _candidates(data_dir: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """Folders to search, with a description of where each came from, in resolution order."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [(root, "--data-dir"), (root / "mnist", "--data-dir")]
    found: list[tuple[Path, str]] = []
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        found += [(root, f"${ENV_VAR}"), (root / "mnist", f"${ENV_VAR}")]
    found.append((cache_dir(), "user cache"))
    return found


def locate_mnist(
    data_dir: str | os.PathLike | None = None, splits: Sequence[str] = SPLITS
) -> tuple[Path, str]:
    """The folder holding the MNIST files of ``splits`` and where it came from.

    Arguments:
        data_dir: an explicit folder (the mnist folder or one holding ``mnist/``); when given,
            nothing else is searched.
        splits: the splits whose files must all be present.

    Returns:
        ``(folder, source)`` with ``source`` one of ``"--data-dir"``, ``"$ODEBENCH_DATA"``,
        ``"user cache"``.

    Raises:
        MNISTError: when no searched folder holds all the files; the message lists the folders
            searched, the names expected and how to get them.
    """
    _check_splits(splits)
    names = _expected_names(splits)
    candidates = _candidates(data_dir)
    for folder, source in candidates:
        if all(_file_in(folder, name) for name in names):
            return folder, source
    searched = ", ".join(str(folder) for folder, _ in candidates)
    hint = (
        f"pass --data-dir, set ${ENV_VAR}, or run `odebench data mnist --fetch`"
        if data_dir is None
        else "check the path, or leave out --data-dir to use $ODEBENCH_DATA or the user cache"
    )
    raise MNISTError(
        f"MNIST files not found (searched: {searched}); expected {', '.join(n + '[.gz]' for n in names)}; {hint}"
    )


def find_mnist_dir(data_dir: str | os.PathLike | None = None, splits: Sequence[str] = SPLITS) -> Path:
    """The folder holding the MNIST files (see :func:`locate_mnist`)."""
    return locate_mnist(data_dir, splits)[0]


# -- reading and validating IDX files ---------------------------------------------------------


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_header(
    fh, name: str, expected_ndim: int | None, expected_dtype: np.dtype | None
) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read and check the IDX header: returns ``(dtype, dims, header_bytes)``."""
    magic = fh.read(4)
    if len(magic) < 4:
        raise MNISTError(f"{name}: truncated IDX file ({len(magic)} bytes, too short for a header)")
    zero, code, ndim = struct.unpack(">HBB", magic)
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise MNISTError(f"{name}: not an IDX file (magic number 0x{magic.hex()})")
    if expected_ndim is not None and ndim != expected_ndim:
        raise MNISTError(
            f"{name}: wrong magic number 0x{magic.hex()}: {ndim}-D data, expected {expected_ndim}-D "
            f"(0x{code:02x}{expected_ndim:02x})"
        )
    dtype = _IDX_DTYPES[code]
    if expected_dtype is not None and dtype != expected_dtype:
        raise MNISTError(
            f"{name}: wrong magic number 0x{magic.hex()}: dtype code 0x{code:02x} ({dtype}), expected {expected_dtype}"
        )
    raw_dims = fh.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise MNISTError(f"{name}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    return dtype, dims, 4 + 4 * ndim


def _gzip_isize(path: Path) -> int:
    """The gzip trailer's ISIZE: uncompressed length mod 2**32 (of the last member)."""
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return struct.unpack("<I", fh.read(4))[0]


def read_idx(
    path: str | os.PathLike,
    *,
    md5: str | None = None,
    expected_ndim: int | None = None,
    expected_dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in ``.gz``), fully validated.

    The header is checked against the file size (for gzip: against the trailer's recorded
    length and the largest possible deflate ratio) before the payload is allocated, and the
    payload must fill the declared shape exactly with nothing after it.

    Arguments:
        path: the file.
        md5: expected hex MD5 of the file as stored (compressed for ``.gz``), or None.
        expected_ndim: the number of dimensions the magic number must declare, or None.
        expected_dtype: the dtype the magic number must declare, or None.

    Returns:
        The array in native byte order, shaped as the header says.

    Raises:
        MNISTError: on any mismatch, with a one-line message naming the file.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise MNISTError(f"{name}: no such file ({path})")
    file_size = path.stat().st_size
    if md5 is not None:
        actual = file_md5(path)
        if actual != md5.lower():
            raise MNISTError(
                f"{name}: MD5 mismatch (got {actual}, expected {md5.lower()}): corrupted or truncated "
                f"file, delete it and fetch it again ({path})"
            )
    expected_dtype = None if expected_dtype is None else np.dtype(expected_dtype)
    compressed = name.endswith(".gz")
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as fh:
            dtype, dims, header = _parse_header(fh, name, expected_ndim, expected_dtype)
            payload = int(np.prod(dims, dtype=object)) * dtype.itemsize
            if compressed:
                isize = _gzip_isize(path)
                if (header + payload) % 2**32 != isize:
                    raise MNISTError(
                        f"{name}: header declares shape {dims} ({header + payload} bytes) but the gzip "
                        f"trailer records {isize} bytes: truncated or forged file"
                    )
                if header + payload > _MAX_GZIP_RATIO * file_size + 1024:
                    raise MNISTError(
                        f"{name}: header declares shape {dims} ({header + payload} bytes), impossible for "
                        f"a {file_size}-byte gzip file: forged header"
                    )
            elif header + payload != file_size:
                kind = "truncated" if header + payload > file_size else "has trailing data"
                raise MNISTError(
                    f"{name}: header declares shape {dims} ({header + payload} bytes) but the file has "
                    f"{file_size} bytes: {kind}"
                )
            out = np.empty(dims, dtype=dtype)
            view = memoryview(out.reshape(-1).view(np.uint8))
            filled = 0
            while filled < payload:
                n = fh.readinto(view[filled:])
                if not n:
                    raise MNISTError(f"{name}: truncated: {filled} of {payload} data bytes")
                filled += n
            if fh.read(1):
                raise MNISTError(f"{name}: trailing data after the {payload} bytes its header declares")
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise MNISTError(f"{name}: corrupt or truncated gzip data ({err})") from None
    except OSError as err:
        raise MNISTError(f"{name}: cannot read ({err})") from None
    return out.astype(dtype.newbyteorder("="), copy=False)


def load_mnist(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    *,
    checksums: Mapping[str, str] | None = PUBLISHED_MD5,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split as numpy arrays.

    Arguments:
        split: ``"train"`` or ``"test"``.
        data_dir: an explicit folder (see :func:`locate_mnist` for the search order).
        checksums: file name (as stored, e.g. ``train-images-idx3-ubyte.gz``) → hex MD5; a
            file whose name has an entry must match it. Default: the published sums of the
            gzipped files (uncompressed files have none and get the structural checks only).
            None skips MD5 checks.

    Returns:
        ``(images, labels)``: uint8 arrays of shapes ``(N, 28, 28)`` and ``(N,)``.

    Raises:
        MNISTError: files missing, truncated, forged, mislabelled or failing their checksum.
    """
    _check_splits([split])
    folder = find_mnist_dir(data_dir, [split])
    images_path, labels_path = (_file_in(folder, name) for name in MNIST_FILES[split])
    assert images_path is not None and labels_path is not None  # find_mnist_dir checked
    sums = checksums or {}
    images = read_idx(images_path, md5=sums.get(images_path.name), expected_ndim=3, expected_dtype=np.uint8)
    if images.shape[1:] != (28, 28):
        raise MNISTError(f"{images_path.name}: images are {images.shape[1:]}, expected (28, 28)")
    labels = read_idx(labels_path, md5=sums.get(labels_path.name), expected_ndim=1, expected_dtype=np.uint8)
    if labels.shape[0] != images.shape[0]:
        raise MNISTError(
            f"{labels_path.name}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path.name}"
        )
    if labels.size and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise MNISTError(f"{labels_path.name}: label {int(labels[bad])} at index {bad} is not a digit 0..9")
    return images, labels


# -- subsets and normalisation ------------------------------------------------------------------


def mnist_subset(
    images: np.ndarray, labels: np.ndarray, n: int, *, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, deterministic subset of ``n`` examples (for the quick profile).

    Arguments:
        images, labels: a split as returned by :func:`load_mnist`.
        n: how many examples to keep.
        seed: None takes the first ``n`` examples; an integer takes a class-balanced subset
            (``n // 10`` per digit, the remainder one each to the lowest digits) drawn with
            ``numpy.random.default_rng(seed)``, kept in the split's original order.

    Raises:
        ValueError: ``n`` out of range, or too few examples of a digit for a balanced subset.
    """
    total = len(labels)
    if not 0 <= n <= total:
        raise ValueError(f"subset size must be in 0..{total}, got {n}")
    if seed is None:
        return images[:n], labels[:n]
    rng = np.random.default_rng(seed)
    picked = []
    for digit in range(10):
        want = n // 10 + (1 if digit < n % 10 else 0)
        (pool,) = np.nonzero(labels == digit)
        if want > len(pool):
            raise ValueError(
                f"a balanced subset of {n} needs {want} examples of digit {digit}, have {len(pool)}"
            )
        picked.append(rng.choice(pool, size=want, replace=False))
    index = np.sort(np.concatenate(picked))
    return images[index], labels[index]


def normalize_images(images: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """uint8 images ``(N, 28, 28)`` → ``(x / 255 - 0.1307) / 0.3081`` shaped ``(N, 1, 28, 28)``."""
    scalar = np.dtype(dtype).type
    x = np.asarray(images, dtype=dtype) / scalar(255.0)
    x = (x - scalar(MNIST_MEAN)) / scalar(MNIST_STD)
    return x.reshape(x.shape[0], 1, *x.shape[1:])


# -- download and status ----------------------------------------------------------------------


def _download(url: str, target: Path, timeout: float) -> None:
    """Stream ``url`` into ``target`` (at most :data:`_DOWNLOAD_LIMIT` bytes)."""
    received = 0
    with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
        for chunk in iter(lambda: response.read(1 << 16), b""):
            received += len(chunk)
            if received > _DOWNLOAD_LIMIT:
                raise OSError(f"more than {_DOWNLOAD_LIMIT} bytes")
            out.write(chunk)


def fetch_mnist(
    dest: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] = MIRRORS,
    checksums: Mapping[str, str] = PUBLISHED_MD5,
    timeout: float = 10.0,
) -> Path:
    """Download the four gzipped MNIST files into ``dest`` and verify them.

    Files already present with the right checksum are kept. Each download goes to a
    ``.part`` file that replaces the target only once its MD5 matches; both splits are
    then loaded once to check headers and labels.

    Arguments:
        dest: target folder (created); default the user cache (:func:`cache_dir`).
        mirrors: base URLs tried in order, each ending in ``/``.
        checksums: expected MD5 of each ``*.gz`` file.
        timeout: seconds per connection attempt.

    Returns:
        The folder holding the verified files.

    Raises:
        MNISTError: when a file cannot be downloaded from any mirror or fails verification;
            the message says where to put hand-downloaded files and which names are expected.
    """
    dest = Path(dest).expanduser() if dest is not None else cache_dir()
    names = [f"{name}.gz" for name in _expected_names(SPLITS)]
    manual = (
        f"download {', '.join(names)} from {mirrors[0] if mirrors else MIRRORS[0]} by hand into {dest} "
        f"(or point --data-dir / ${ENV_VAR} at a folder holding them)"
    )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MNISTError(f"cannot create {dest} ({err}); {manual}") from None
    for name in names:
        target = dest / name
        expected = checksums.get(name)
        if target.is_file() and expected is not None and file_md5(target) == expected:
            continue
        part = dest / f"{name}.part"
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                _download(url, part, timeout)
                actual = file_md5(part)
                if expected is not None and actual != expected:
                    raise OSError(f"MD5 {actual}, expected {expected}")
            except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
                errors.append(f"{url}: {getattr(err, 'reason', None) or err}")
                part.unlink(missing_ok=True)
                continue
            os.replace(part, target)
            break
        else:
            raise MNISTError(f"could not download {name} ({'; '.join(errors) or 'no mirrors'}); {manual}")
    for split in SPLITS:
        load_mnist(split, dest, checksums=checksums)
    return dest


def mnist_status(data_dir: str | os.PathLike | None = None) -> str:
    """A short report for ``odebench data mnist``: where the files are and that they verified.

    Loads both splits with every check on (about a second).

    Raises:
        MNISTError: when the files are missing or one fails verification.
    """
    folder, source = locate_mnist(data_dir)
    lines = [f"MNIST in {folder} (from {source})"]
    counts = []
    for split in SPLITS:
        images, labels = load_mnist(split, folder)
        counts.append(f"{len(labels)} {split}")
        for name, shape in zip(MNIST_FILES[split], (images.shape, labels.shape), strict=True):
            path = _file_in(folder, name)
            assert path is not None
            check = "MD5 ok" if path.name in PUBLISHED_MD5 else "uncompressed: header, size and labels ok"
            dims = "x".join(str(d) for d in shape)
            lines.append(f"  {path.name:<28} {dims:<12} {check}")
    lines.append(f"verified: {' + '.join(counts)} examples")
    return "\n".join(lines)
