"""`python -m deploy.job --print-config [--config X.yaml] [overrides]`: every config key with its default, the value
this invocation would use where it differs, and its description (read from the pydantic fields of common/config.py,
so it cannot drift from what the job accepts)."""
from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel

from common.config import RunConfig


class Key(NamedTuple):
    key: str  # dotted, as in overrides
    default: Any  # None for a section
    description: str
    section: bool


def reference(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[Key]:
    """Every field, depth first in declaration order; a section row precedes its keys."""
    rows: list[Key] = []
    for name, field in model.model_fields.items():
        key, kind = f"{prefix}{name}", field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            doc = (kind.__doc__ or "").strip().splitlines()
            rows.append(Key(key, None, doc[0] if doc else "", True))
            rows.extend(reference(kind, f"{key}."))
        else:
            rows.append(Key(key, field.get_default(call_default_factory=True), field.description or "", False))
    return rows


def _value(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def render(cfg: RunConfig | None = None) -> str:
    """`key = default  # description` per key, `(here: value)` where cfg differs from the default."""
    lines = []
    for row in reference():
        note = f"  # {row.description}" if row.description else ""
        if row.section:
            lines.append(("\n" if "." not in row.key else "") + f"[{row.key}]{note}")
            continue
        value = None if cfg is None else _value(cfg, row.key)
        value = list(value) if isinstance(value, tuple) else value
        default = list(row.default) if isinstance(row.default, tuple) else row.default
        here = "" if cfg is None or value == default else f"  (here: {value!r})"
        lines.append(f"{row.key} = {default!r}{here}{note}")
    return "\n".join(lines).lstrip("\n")
