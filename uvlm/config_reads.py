"""Which config keys a step really reads: a config dict that records every key looked up in it.

`uvlm` wraps the loaded config in one when UVLM_RECORD_READS names a file, and appends one JSON line
per command (the keys read, the uvlm modules loaded); tests/test_steps.py compares both with the
declaration in uvlm/steps.py after a real workflow run.
"""

from __future__ import annotations

from typing import Any


class RecordingDict(dict):
    """A dict that adds the dotted path of every value read to `reads`.

    Looking up a section to descend into it is not a read; iterating it, measuring or comparing it, or
    copying it is a read of the whole section; `key in d` reads only that key (whether it exists).
    """

    def __init__(self, data: dict, reads: set[str], path: str = ""):
        super().__init__(data)
        self._reads, self._path = reads, path

    def _sub(self, key: Any) -> str:
        return f"{self._path}.{key}" if self._path else str(key)

    def _whole(self) -> None:
        self._reads.add(self._path or "*")

    def _value(self, key: Any, value: Any) -> Any:
        if isinstance(value, dict):
            return RecordingDict(value, self._reads, self._sub(key))
        self._reads.add(self._sub(key))
        return value

    def __getitem__(self, key: Any) -> Any:
        return self._value(key, dict.__getitem__(self, key))

    def get(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self[key]
        self._reads.add(self._sub(key))
        return default

    def __contains__(self, key: object) -> bool:
        self._reads.add(self._sub(key))
        return dict.__contains__(self, key)

    def __iter__(self):
        self._whole()
        return dict.__iter__(self)

    def keys(self):
        self._whole()
        return dict.keys(self)

    def items(self):
        self._whole()
        return [(k, self._value(k, v)) for k, v in dict.items(self)]

    def values(self):
        return [v for _, v in self.items()]

    def __len__(self) -> int:
        self._whole()
        return dict.__len__(self)

    def __eq__(self, other: object) -> bool:
        self._whole()
        return dict.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> dict:
        self._whole()
        return dict(dict.items(self))


def recording(cfg: dict) -> tuple[RecordingDict, set[str]]:
    """(a recording view of `cfg`, the set its reads are added to)."""
    reads: set[str] = set()
    return RecordingDict(cfg, reads), reads
