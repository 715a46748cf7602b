"""A small reader for UBJSON, the binary JSON XGBoost saves its models in (``.ubj``).

Reading the booster with this instead of ``xgboost`` keeps XGBoost (and the SciPy, pandas and
scikit-learn it imports) out of the service. Only decoding is needed, and only of
what XGBoost writes: big-endian numbers, length-prefixed strings, and containers that may be
typed (``$``) and counted (``#``). Typed numeric arrays come back as read-only
big-endian numpy arrays.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

_SCALARS: dict[int, struct.Struct] = {
    ord("i"): struct.Struct(">b"),
    ord("U"): struct.Struct(">B"),
    ord("I"): struct.Struct(">h"),
    ord("l"): struct.Struct(">i"),
    ord("L"): struct.Struct(">q"),
    ord("d"): struct.Struct(">f"),
    ord("D"): struct.Struct(">d"),
}
_DTYPES: dict[int, np.dtype[Any]] = {
    ord("i"): np.dtype(">i1"),
    ord("U"): np.dtype(">u1"),
    ord("I"): np.dtype(">i2"),
    ord("l"): np.dtype(">i4"),
    ord("L"): np.dtype(">i8"),
    ord("d"): np.dtype(">f4"),
    ord("D"): np.dtype(">f8"),
}
_INT_MARKERS = frozenset(ord(c) for c in "iUIlL")
_NOOP, _TYPE, _COUNT = ord("N"), ord("$"), ord("#")
_OBJECT, _OBJECT_END, _ARRAY, _ARRAY_END = ord("{"), ord("}"), ord("["), ord("]")
_STRING, _HIGH_PRECISION, _CHAR = ord("S"), ord("H"), ord("C")
_TRUE, _FALSE, _NULL = ord("T"), ord("F"), ord("Z")


class UBJSONError(ValueError):
    """The bytes are not valid UBJSON (or use a feature XGBoost never writes)."""


class _Reader:
    """Recursive-descent decoder; written flat because a booster holds thousands of small arrays."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def _marker(self) -> int:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise UBJSONError("unexpected end of data")
        marker = data[pos]
        while marker == _NOOP:
            pos += 1
            if pos >= len(data):
                raise UBJSONError("unexpected end of data")
            marker = data[pos]
        self.pos = pos + 1
        return marker

    def _scalar(self, marker: int) -> int | float:
        layout = _SCALARS[marker]
        value: int | float = layout.unpack_from(self.data, self.pos)[0]
        self.pos += layout.size
        return value

    def _length(self) -> int:
        marker = self._marker()
        if marker not in _INT_MARKERS:
            raise UBJSONError(f"expected an integer length, found marker {chr(marker)!r}")
        size = self._scalar(marker)
        if not isinstance(size, int) or size < 0:
            raise UBJSONError("negative length")
        return size

    def _string(self) -> str:
        size = self._length()
        end = self.pos + size
        if end > len(self.data):
            raise UBJSONError("unexpected end of data")
        text = self.data[self.pos : end].decode("utf-8")
        self.pos = end
        return text

    def value(self, marker: int | None = None) -> Any:
        if marker is None:
            marker = self._marker()
        if marker in _SCALARS:
            return self._scalar(marker)
        if marker == _OBJECT:
            return self._object()
        if marker == _ARRAY:
            return self._array()
        if marker == _STRING or marker == _HIGH_PRECISION:
            return self._string()
        if marker == _TRUE:
            return True
        if marker == _FALSE:
            return False
        if marker == _NULL:
            return None
        if marker == _CHAR:
            return chr(self._marker())
        raise UBJSONError(f"unknown marker {chr(marker)!r} at byte {self.pos - 1}")

    def _header(self) -> tuple[int | None, int | None]:
        if self.pos >= len(self.data):
            raise UBJSONError("unexpected end of data")
        head = self.data[self.pos]
        if head == _TYPE:
            kind = self.data[self.pos + 1]
            self.pos += 2
            if self._marker() != _COUNT:
                raise UBJSONError("a typed container must be counted")
            return kind, self._length()
        if head == _COUNT:
            self.pos += 1
            return None, self._length()
        return None, None

    def _array(self) -> Any:
        kind, count = self._header()
        if kind is not None and count is not None and kind in _DTYPES:
            dtype = _DTYPES[kind]
            end = self.pos + count * dtype.itemsize
            if end > len(self.data):
                raise UBJSONError("unexpected end of data")
            array = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
            self.pos = end
            # Left big-endian: numpy converts on first arithmetic, and most arrays are never used.
            return array
        if count is not None:
            return [self.value(kind) for _ in range(count)]
        items: list[Any] = []
        while self._peek() != _ARRAY_END:
            items.append(self.value())
        self.pos += 1
        return items

    def _object(self) -> dict[str, Any]:
        kind, count = self._header()
        result: dict[str, Any] = {}
        if count is not None:
            for _ in range(count):
                key = self._string()
                result[key] = self.value(kind)
            return result
        while self._peek() != _OBJECT_END:
            key = self._string()
            result[key] = self.value()
        self.pos += 1
        return result

    def _peek(self) -> int:
        if self.pos >= len(self.data):
            raise UBJSONError("unexpected end of data")
        return self.data[self.pos]


def loads(data: bytes) -> Any:
    """Decode one UBJSON document; typed numeric arrays become read-only numpy arrays."""
    reader = _Reader(data)
    try:
        value = reader.value()
    except (struct.error, UnicodeDecodeError, KeyError, IndexError, RecursionError) as exc:
        raise UBJSONError(f"malformed UBJSON: {exc}") from exc
    if reader.pos != len(reader.data):
        raise UBJSONError(f"{len(reader.data) - reader.pos} trailing bytes after the document")
    return value
