"""Read and check a GGUF file's header without loading it: the magic, the version, the metadata and
the tensor table, and whether the file is as long as the tensors it declares.

A garbage or truncated ``.gguf`` is refused here, in a fraction of a second, with one line that
names the file, before anything announces loading or converting it. The layout follows the GGUF
spec (ggml ``docs/gguf.md``): magic ``GGUF``, uint32 version, uint64 tensor and metadata counts,
the metadata key/values, the tensor infos, then the tensor data at an aligned offset.
"""
from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from effbench.errors import EffbenchError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # version 1 (2023) used 32-bit counts; neither gguf nor transformers reads it
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 8  # ggml has 4; anything far beyond is a corrupt table, not a tensor
MAX_COUNT = 1 << 24  # tensors or metadata entries: real models have thousands at most

# Metadata value types: struct code of the fixed-size ones; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
REDOWNLOAD = "download it again (or pass another .gguf file or a checkpoint directory)"


class _Truncated(Exception):
    """The header runs past the end of the file."""


class _NotGGUF(Exception):
    """The file does not start with the GGUF magic."""


class _Corrupt(Exception):
    """The header holds a value no GGUF writer produces."""


@dataclass
class GGUFHeader:
    path: str
    version: int
    tensor_count: int
    metadata: dict[str, Any]  # scalar and string values
    array_lengths: dict[str, int] = field(default_factory=dict)  # array values: their length only
    data_offset: int = 0  # where the tensor data starts
    data_bytes: Optional[int] = None  # bytes the tensor table declares (None: a tensor type gguf does not know)
    file_bytes: int = 0

    @property
    def architecture(self) -> Optional[str]:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def arch_value(self, key: str) -> Any:
        """``{architecture}.{key}``, e.g. ``embedding_length``; None when absent."""
        return self.metadata.get(f"{self.architecture}.{key}") if self.architecture else None


class _Cursor:
    def __init__(self, buf: Any, size: int, endian: str) -> None:
        self.buf, self.size, self.pos, self.endian = buf, size, 0, endian

    def take(self, code: str) -> Any:
        fmt = self.endian + code
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise _Truncated()
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated()
        self.pos += n

    def string(self) -> bytes:
        n = self.take("Q")
        start = self.pos
        self.skip(n)
        return bytes(self.buf[start:self.pos])

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string().decode("utf-8", errors="replace")
        raise _Corrupt(f"unknown metadata value type {vtype}")

    def skip_array(self, vtype: int, count: int) -> None:
        if vtype in _SCALARS:
            self.skip(struct.calcsize(self.endian + _SCALARS[vtype]) * count)
        elif vtype == _STRING:
            for _ in range(count):
                self.skip(self.take("Q"))
        elif vtype == _ARRAY:
            for _ in range(count):
                self.skip_array(self.take("I"), self.take("Q"))
        else:
            raise _Corrupt(f"unknown metadata array type {vtype}")


@lru_cache(maxsize=1)
def _gguf_constants() -> Any:
    """The gguf package's ``constants`` module (standard library only), executed on its own when the
    package is not imported yet: ``import gguf`` loads numpy, which a header check (run on every
    start-up that names a GGUF file, the serving client's included) has no use for. Falls back to
    the package; None without it."""
    import sys

    if "gguf" not in sys.modules:
        try:
            constants = _gguf_constants_alone()
        except Exception:  # noqa: BLE001 - any surprise in another package's layout: import it whole
            constants = None
        if constants is not None:
            return constants
    try:
        import gguf
    except ImportError:  # pragma: no cover - gguf is a dependency
        return None
    return gguf


def _gguf_constants_alone() -> Any:
    """``gguf/constants.py`` executed as a module of its own (it imports only the standard library)."""
    import importlib.util

    spec = importlib.util.find_spec("gguf")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "constants.py"
        own = importlib.util.spec_from_file_location("effbench._gguf_constants", path)
        if own is None or own.loader is None or not path.is_file():
            continue
        module = importlib.util.module_from_spec(own)
        own.loader.exec_module(module)
        if isinstance(getattr(module, "GGML_QUANT_SIZES", None), dict):
            return module
    return None


def _tensor_type_sizes() -> Optional[dict[int, tuple[int, int]]]:
    """ggml type id -> (elements per block, bytes per block), from the gguf package."""
    constants = _gguf_constants()
    if constants is None:  # pragma: no cover - gguf is a dependency
        return None
    return {int(k): (int(v[0]), int(v[1])) for k, v in constants.GGML_QUANT_SIZES.items()}


def _parse(buf: Any, size: int, path: str) -> GGUFHeader:
    if size < 4 or bytes(buf[:4]) != MAGIC:
        raise _NotGGUF()
    if size < 24:
        raise _Truncated()
    little = struct.unpack_from("<I", buf, 4)[0]
    # A big-endian file (s390x conversions) has its version byte-swapped in a little-endian read.
    endian = "<" if little < 0x10000 else ">"
    cur = _Cursor(buf, size, endian)
    cur.pos = 4
    version = cur.take("I")
    if version not in SUPPORTED_VERSIONS:
        raise EffbenchError(f"'{path}' is GGUF version {version}; effbench reads versions "
                            f"{' and '.join(map(str, SUPPORTED_VERSIONS))}: convert it again with a current llama.cpp")
    tensor_count, kv_count = cur.take("Q"), cur.take("Q")
    if tensor_count > MAX_COUNT or kv_count > MAX_COUNT:  # random bytes after a real magic and version
        raise _Corrupt(f"it declares {tensor_count:,} tensors and {kv_count:,} metadata entries")
    header = GGUFHeader(path, version, tensor_count, {}, file_bytes=size)
    for _ in range(kv_count):
        key = cur.string().decode("utf-8", errors="replace")
        vtype = cur.take("I")
        if vtype == _ARRAY:
            item_type, count = cur.take("I"), cur.take("Q")
            cur.skip_array(item_type, count)
            header.array_lengths[key] = count
        else:
            header.metadata[key] = cur.value(vtype)
    sizes = _tensor_type_sizes()
    end = 0
    known = sizes is not None
    for _ in range(tensor_count):
        cur.string()
        n_dims = cur.take("I")
        if n_dims > MAX_DIMS:
            raise _Corrupt(f"a tensor has {n_dims} dimensions")
        dims = [cur.take("Q") for _ in range(n_dims)]
        ttype, offset = cur.take("I"), cur.take("Q")
        if sizes is None or not known or ttype not in sizes:
            known = False
            continue
        block, type_bytes = sizes[ttype]
        end = max(end, offset + math.prod(dims) // block * type_bytes)
    alignment = header.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    alignment = alignment if isinstance(alignment, int) and alignment > 0 else DEFAULT_ALIGNMENT
    header.data_offset = -(-cur.pos // alignment) * alignment
    header.data_bytes = end if known else None
    return header


@lru_cache(maxsize=8)
def _read_cached(path: str, size: int, mtime_ns: int, remedy: str) -> GGUFHeader:
    with open(path, "rb") as f:
        if size == 0:
            raise EffbenchError(f"'{path}' is empty, not a GGUF file; {remedy}")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                header = _parse(buf, size, path)
            except _NotGGUF:
                raise EffbenchError(f"'{path}' is not a GGUF file (it does not start with the bytes 'GGUF'); "
                                    f"{remedy}") from None
            except _Truncated:
                raise EffbenchError(f"'{path}' is truncated: its GGUF header runs past the end of the file "
                                    f"({size:,} bytes); {remedy}") from None
            except _Corrupt as e:
                raise EffbenchError(f"'{path}' is a corrupt GGUF file ({e}); {remedy}") from None
    if header.data_bytes is not None and header.data_offset + header.data_bytes > size:
        need = header.data_offset + header.data_bytes
        raise EffbenchError(f"'{path}' is truncated: it holds {size:,} of the {need:,} bytes its header "
                            f"declares; {remedy}")
    return header


def read_header(path: str | Path, remedy: str = REDOWNLOAD) -> GGUFHeader:
    """The checked header of a GGUF file; ``EffbenchError`` (one line naming the file, ending with
    ``remedy``) when it is not a GGUF file, is truncated or corrupt. Cached while the file's size and
    mtime stay the same."""
    p = Path(path)
    try:
        st = p.stat()
        return _read_cached(str(p), st.st_size, st.st_mtime_ns, remedy)
    except OSError as e:
        raise EffbenchError(f"cannot read '{path}': {e.strerror or e}") from None
