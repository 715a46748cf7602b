"""The UBJSON reader against XGBoost's own JSON dump of the same model."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from service import ubjson


def _same(decoded: Any, reference: Any) -> None:
    if isinstance(reference, dict):
        assert isinstance(decoded, dict) and decoded.keys() == reference.keys()
        for key in reference:
            _same(decoded[key], reference[key])
    elif isinstance(decoded, np.ndarray):
        np.testing.assert_array_equal(decoded, np.asarray(reference, dtype=decoded.dtype))
    elif isinstance(reference, list):
        assert isinstance(decoded, list) and len(decoded) == len(reference)
        for a, b in zip(decoded, reference, strict=True):
            _same(a, b)
    elif isinstance(reference, float):
        assert np.float32(decoded) == np.float32(reference)
    else:
        assert decoded == reference


def test_ubjson_booster_decodes_like_json_dump(booster_v2: xgb.Booster) -> None:
    decoded = ubjson.loads(bytes(booster_v2.save_raw("ubj")))
    reference = json.loads(booster_v2.save_raw("json"))
    _same(decoded, reference)


def test_ubjson_scalars_and_untyped_containers() -> None:
    payload = (
        b"{"
        + b"i\x01a"
        + b"T"
        + b"i\x01b"
        + b"Z"
        + b"i\x01c"
        + b"D"
        + struct.pack(">d", 1.5)
        + b"i\x01d"
        + b"["
        + b"i\x05"
        + b"SU\x02hi"
        + b"]"
        + b"i\x01e"
        + b"[#i\x02"
        + b"U\x07"
        + b"F"
        + b"}"
    )
    assert ubjson.loads(payload) == {"a": True, "b": None, "c": 1.5, "d": [5, "hi"], "e": [7, False]}


@pytest.mark.parametrize("payload", [b"", b"{", b"[$d#i\x05\x00\x00", b"Q", b"{i\x01aT}extra", b"{i\x05ab"])
def test_ubjson_malformed_input_raises(payload: bytes) -> None:
    with pytest.raises(ubjson.UBJSONError):
        ubjson.loads(payload)
