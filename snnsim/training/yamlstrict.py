"""YAML that refuses a key given twice in one mapping.

PyYAML keeps the last of two equal keys without a word, so an authors' config whose
``Layers:`` names a layer twice silently builds one layer fewer. :func:`safe_load`
is ``yaml.safe_load`` with a loader that raises instead, naming the key and both
lines; :func:`json_loads` does the same for JSON (a run's ``config.json``).
"""
from __future__ import annotations

import json

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose mappings reject duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:        # an unhashable key: PyYAML reports it below
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"key {key!r} given twice (first on line {first + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def safe_load(stream):
    """``yaml.safe_load`` that raises ``yaml.YAMLError`` on a duplicate key."""
    return yaml.load(stream, Loader=UniqueKeyLoader)


def _unique_pairs(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice")
        out[key] = value
    return out


def json_loads(text: str):
    """``json.loads`` that raises ValueError on a duplicate key."""
    return json.loads(text, object_pairs_hook=_unique_pairs)


__all__ = ["UniqueKeyLoader", "json_loads", "safe_load"]
