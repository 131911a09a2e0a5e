"""Random projections of per-module gradients, generated where they are consumed (``gradients.projection``).

A feature is x·R for the concatenated gradient x of all LoRA matrices and a random (P × dim) matrix R. R is
never stored: its rows for parameter matrix k (the k-th LoRA matrix in ``named_parameters`` order) are a pure
function of (seed, k, row), computed by a counter-based hash in integer tensor arithmetic on the device that
consumes them. So every process on every device (CPU or GPU) makes exactly the same matrix, shards and validation
features agree, and no matrix crosses from the CPU to a GPU. (The matrix is bit-identical everywhere; the sums
are not: a GPU's atomic additions in ``sjlt`` and BLAS blockings in ``dense`` change float round-off only.)
Projecting module by module and summing is x·R exactly, so the per-module gradients can be projected inside the
backward and the P-number gradient never exists.

Registered projections (one class each, ``PROJECTIONS[name]``):

- ``sjlt`` — sparse Johnson–Lindenstrauss (CountSketch, one non-zero per row, as GraSS's SJLT with c = 1):
  coordinate i goes to bucket h(i) with sign s(i). O(P) per example, no multiply-adds; inner products are
  preserved in expectation. The default: the one that finishes at paper scale (P = 134M, cost measured in
  bench/grad_features.py).
- ``dense`` — dense Rademacher ±1/sqrt(dim), as LESS (trak's projector) uses. O(P·dim) per example: fine for small
  adapters and as the reference the sparse one is measured against, hours per example at paper scale on a CPU.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import torch

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2^32 for int64 x in [0, 2^32): split c in 16-bit halves so no product overflows int64
    (the same bits on every device; signed overflow is not defined behaviour to rely on)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser, a bijection of [0, 2^32) that mixes every input bit into every output bit."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def stream_key(seed: int, key: int) -> int:
    """A 32-bit key of the random stream of parameter matrix ``key`` under ``seed``."""
    mixed = fmix32(torch.tensor([(seed * _GOLDEN) & _M32], dtype=torch.int64))
    return int(fmix32((mixed + key * 0x632BE5AB) & _M32 ^ 0x5BD1E995).item())


def hashed_rows(seed: int, key: int, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """32-bit hashes (int64) of rows start..stop-1 of parameter matrix ``key``: the counter-based generator."""
    rows = torch.arange(start, stop, dtype=torch.int64, device=device)
    return fmix32((rows + stream_key(seed, key)) & _M32)


PROJECTIONS: dict[str, type["Projection"]] = {}


def register_projection(name: str) -> Callable[[type], type]:
    def wrap(cls):
        cls.name = name
        PROJECTIONS[name] = cls
        return cls

    return wrap


def build_projection(name: str, dim: int, seed: int, device: str | torch.device = "cpu",
                     cache_bytes: int = 2**30) -> "Projection":
    if name not in PROJECTIONS:
        raise ValueError(f"unknown gradient projection {name!r}; known: {sorted(PROJECTIONS)}")
    return PROJECTIONS[name](dim, seed, device, cache_bytes)


class Projection(abc.ABC):
    """x ↦ x·R_k for the rows R_k of the projection matrix that belong to parameter matrix k."""

    name = ""

    def __init__(self, dim: int, seed: int, device: str | torch.device = "cpu", cache_bytes: int = 2**30) -> None:
        if seed < 0:
            raise ValueError(f"projection seed must be non-negative, got {seed}")
        if dim < 1:
            raise ValueError(f"projection dim must be >= 1, got {dim}")
        self.dim, self.seed, self.device = dim, seed, torch.device(device)
        self.cache_bytes = cache_bytes
        self._cache: dict[tuple[int, int], torch.Tensor] = {}
        self._cached_bytes = 0

    def _cached(self, key: int, n: int, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Generated rows of matrix ``key``, kept on the device while the cache has room (all of a small adapter)."""
        if (key, n) in self._cache:
            return self._cache[(key, n)]
        value = make()
        size = value.numel() * value.element_size()
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[(key, n)] = value
            self._cached_bytes += size
        return value

    @abc.abstractmethod
    def project(self, key: int, x: torch.Tensor) -> torch.Tensor:
        """(B, n) rows of one parameter matrix's (flattened) gradients → (B, dim) float32; each registered
        projection defines it."""


@register_projection("sjlt")
class SparseJL(Projection):
    """CountSketch: row i of R_k has one non-zero, s(i) ∈ {±1} at column h(i) (hash bit 31 and hash mod dim).

    Implemented as one ``index_add_`` into 2·dim columns (column h + dim·[s = −1]) and a subtraction, so the
    per-example cost is one pass over the gradient with no multiply; the cached index is 4 bytes a parameter.
    """

    def columns(self, key: int, n: int) -> torch.Tensor:
        def make():
            h = hashed_rows(self.seed, key, 0, n, self.device)
            return ((h % self.dim) + self.dim * (h >> 31)).to(torch.int32)

        return self._cached(key, n, make)

    def project(self, key, x):
        x = x.to(self.device, torch.float32)
        columns = self.columns(key, x.shape[1])
        both = torch.zeros(x.shape[0], 2 * self.dim, device=self.device)
        if self.device.type == "cuda":
            both.index_add_(1, columns, x)
        else:
            # on a CPU, index_add_ along dim 1 is ~10x slower than one contiguous 1-D pass per row (measured)
            for row, values in zip(both, x):
                row.index_add_(0, columns, values)
        return both[:, : self.dim] - both[:, self.dim :]


@register_projection("dense")
class DenseRademacher(Projection):
    """Dense ±1/sqrt(dim) entries; entry (i, j) of R_k is bit 31 of fmix32(hash(i) + j·golden)."""

    #: rows generated at once (bounds the transient int64 hash block: rows × dim × 8 bytes)
    block_rows = 1024

    def block(self, key: int, start: int, stop: int) -> torch.Tensor:
        def make():
            rows = hashed_rows(self.seed, key, start, stop, self.device)
            cols = (torch.arange(self.dim, dtype=torch.int64, device=self.device) * _GOLDEN) & _M32
            bits = fmix32((rows[:, None] + cols[None, :]) & _M32) >> 31
            return bits.to(torch.float32).mul_(2).sub_(1).div_(math.sqrt(self.dim))

        return self._cached(key, start, make) if stop - start == self.block_rows else make()

    def project(self, key, x):
        x = x.to(self.device, torch.float32)
        out = torch.zeros(x.shape[0], self.dim, device=self.device)
        for start in range(0, x.shape[1], self.block_rows):
            stop = min(start + self.block_rows, x.shape[1])
            out += x[:, start:stop] @ self.block(key, start, stop)
        return out
