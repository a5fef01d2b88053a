"""Plain data across the sandbox boundary: builtin values <-> JSON, exact types only.

This file is self-contained (stdlib `json` only): its source is prepended to the in-sandbox scripts
(`inside/program.py`, `inside/checker.py`), which cannot import the project. The checker decodes what the program's
process sent with `decode`, which builds only fresh builtin objects (no subclass, no object of the program's, nothing
whose `__eq__` the program wrote), so every comparison a test makes is the builtins' own.

Encoding: None, bool, int, float, str are JSON scalars (NaN/Infinity as Python's json writes them); list is a JSON
array; the other builtins are one-key objects: {"tuple": [...]}, {"dict": [[k, v], ...]}, {"set": [...]},
{"frozenset": [...]}, {"bytes": hex}, {"bytearray": hex}, {"complex": [re, im]}.
"""
import json as _json

PLAIN_MAX_DEPTH = 64
PLAIN_MAX_ITEMS = 1_000_000


class PlainError(ValueError):
    """The value is not plain data (a type outside the list above, too deep, or too many items)."""


def plain_encode(value, _depth=0, _count=None):
    """A JSON-ready structure for `value`; raises PlainError for anything but exact builtin types."""
    count = _count if _count is not None else [0]
    count[0] += 1
    if count[0] > PLAIN_MAX_ITEMS or _depth > PLAIN_MAX_DEPTH:
        raise PlainError("value too large or too deep")
    kind = type(value)  # exact types: a subclass of int/str/list could carry its own __eq__
    if value is None or kind is bool or kind is int or kind is float or kind is str:
        return value
    if kind is list:
        return [plain_encode(item, _depth + 1, count) for item in value]
    if kind is tuple:
        return {"tuple": [plain_encode(item, _depth + 1, count) for item in value]}
    if kind is dict:
        return {"dict": [[plain_encode(k, _depth + 1, count), plain_encode(v, _depth + 1, count)]
                         for k, v in value.items()]}
    if kind is set or kind is frozenset:
        return {kind.__name__: [plain_encode(item, _depth + 1, count) for item in value]}
    if kind is bytes or kind is bytearray:
        return {kind.__name__: value.hex()}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    raise PlainError("%s is not plain data" % kind.__name__)


_SCALARS = (type(None), bool, int, float, str)


def plain_decode(data, _depth=0):
    """The builtin value encoded by `data` (as json.loads returns it); raises PlainError on anything malformed."""
    if _depth > PLAIN_MAX_DEPTH:
        raise PlainError("value too deep")
    kind = type(data)
    if kind in _SCALARS:
        return data
    if kind is list:
        return [plain_decode(item, _depth + 1) for item in data]
    if kind is not dict or len(data) != 1:
        raise PlainError("malformed plain value")
    (tag, payload), = data.items()
    try:
        if tag in ("tuple", "set", "frozenset") and type(payload) is list:
            items = [plain_decode(item, _depth + 1) for item in payload]
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
        if tag == "dict" and type(payload) is list:
            out = {}
            for pair in payload:
                if type(pair) is not list or len(pair) != 2:
                    raise PlainError("malformed dict item")
                out[plain_decode(pair[0], _depth + 1)] = plain_decode(pair[1], _depth + 1)
            return out
        if tag in ("bytes", "bytearray") and type(payload) is str:
            return (bytes if tag == "bytes" else bytearray).fromhex(payload)
        if tag == "complex" and type(payload) is list and len(payload) == 2 \
                and all(type(x) in (int, float) for x in payload):
            return complex(payload[0], payload[1])
    except TypeError as exc:  # an unhashable key or set element
        raise PlainError(str(exc)) from None
    except ValueError as exc:  # bad hex
        raise PlainError(str(exc)) from None
    raise PlainError("malformed plain value with tag %r" % (tag,))


def plain_dumps(message):
    """One protocol line (bytes, newline-terminated) for a dict of JSON-ready fields."""
    return _json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n"
