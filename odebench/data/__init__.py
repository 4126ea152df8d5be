"""Dataset loaders. MNIST: the original IDX files, header-validated and MD5-checked."""

from __future__ import annotations

from odebench.data.mnist import (
    MIRRORS,
    MNIST_FILES,
    MNIST_MEAN,
    MNIST_SIZES,
    MNIST_STD,
    PUBLISHED_MD5,
    MNISTError,
    cache_dir,
    fetch_mnist,
    find_mnist_dir,
    load_mnist,
    locate_mnist,
    mnist_status,
    mnist_subset,
    normalize_images,
    read_idx,
)

__all__ = [
    "MIRRORS",
    "MNIST_FILES",
    "MNIST_MEAN",
    "MNIST_SIZES",
    "MNIST_STD",
    "PUBLISHED_MD5",
    "MNISTError",
    "cache_dir",
    "fetch_mnist",
    "find_mnist_dir",
    "load_mnist",
    "locate_mnist",
    "mnist_status",
    "mnist_subset",
    "normalize_images",
    "read_idx",
]
