"""Rows of a Hugging Face dataset from a local path or a hub name, with seeded epochs and counted bad rows.

`source` is what `datasets.load_dataset` takes: a hub name ("openai/gsm8k"), a local snapshot directory of one, or a
single local data file (.jsonl / .json / .parquet / .csv). Nothing here downloads unless a hub name is given and the
machine has the network (tests use local files only).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.messages import PromptItem

log = logging.getLogger(__name__)
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class BadRow(ValueError):
    """A dataset row that cannot become a prompt; the message says what is wrong with it."""


def load_rows(source: str, *, split: str, config: str | None = None) -> list[dict[str, Any]]:
    """All rows of `split` as dicts. A file source is the split itself (named so in the error if it fails)."""
    from datasets import load_dataset  # lazy: validating a config must not import datasets

    path = Path(source).expanduser()
    if path.is_file():
        builder = _BUILDERS.get(path.suffix)
        if builder is None:
            raise ValueError(f"task.source {source!r}: unknown data file type {path.suffix!r}; "
                             f"use one of {sorted(_BUILDERS)}")
        data = load_dataset(builder, data_files={split: str(path)}, split=split)
    else:
        try:
            data = load_dataset(str(path) if path.is_dir() else source, config, split=split)
        except Exception as err:  # the library's own error names the cause; add which key and split were read
            raise ValueError(f"task.source {source!r} (config {config!r}, split {split!r}): {err}") from err
    return [dict(row) for row in data]


def to_items(rows: list[dict[str, Any]], convert: Callable[[int, dict[str, Any]], PromptItem], *,
             source: str, split: str) -> list[PromptItem]:
    """Each row through `convert`; a row it rejects (BadRow) is skipped, counted and logged with its index — a bad row
    never fails the batch and is never dropped silently. Raises when no row is usable."""
    items, bad = [], []
    for index, row in enumerate(rows):
        try:
            items.append(convert(index, row))
        except BadRow as err:
            bad.append(f"row {index}: {err}")
    if bad:
        log.warning("%s [%s]: skipped %d of %d rows, e.g. %s", source, split, len(bad), len(rows), "; ".join(bad[:3]))
    if not items:
        raise ValueError(f"task.source {source!r} [{split}]: no usable row ({len(bad)} bad: {'; '.join(bad[:3])})")
    return items


def epochs(items: list[PromptItem], *, num: int, seed: int) -> list[PromptItem]:
    """`num` items: seeded shuffles of the whole set, one epoch after another (the trainer draws steps x B)."""
    rng = np.random.default_rng(seed)
    out: list[PromptItem] = []
    while len(out) < num:
        out.extend(items[i] for i in rng.permutation(len(items)))
    return out[:num]


def field(row: dict[str, Any], key: str, kind: type = str) -> Any:
    value = row.get(key)
    if not isinstance(value, kind) or (kind is str and isinstance(value, str) and not value.strip()):
        raise BadRow(f"field {key!r} must be a non-empty {kind.__name__}, got {value!r:.60}")
    return value


def prompt_functions(load: Callable[[str | None, str, str], list[PromptItem]]):
    """A hub-backed task's (make_prompts, load_test) from its `load(source, split, prompt_format)`: training prompts
    cycle over the split in seeded epochs; a test file is loaded as the "test" split."""
    def make_prompts(*, prompt_format: str, split: str, num: int, seed: int,
                     source: str | None = None) -> list[PromptItem]:
        return epochs(load(source, split, prompt_format), num=num, seed=seed)

    def load_test(path: str, prompt_format: str) -> list[PromptItem]:
        return load(path, "test", prompt_format)

    return make_prompts, load_test
