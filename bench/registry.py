"""Name -> factory registries (timm-style): one decorator registers, list/get find.

Third-party packages can register through the entry-point group ``stealbench.<kind>``
(e.g. ``stealbench.defenses``); their modules are imported on first lookup.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from importlib import metadata


class UnknownNameError(ValueError):
    """Raised for a name that is not registered; lists the valid names."""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, object] = {}
        self._entry_points_loaded = False

    def register(self, name: str | None = None):
        def deco(obj):
            key = (name or getattr(obj, "name", None) or obj.__name__).lower()
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj
        return deco

    def _load_entry_points(self):
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=f"stealbench.{self.kind}s"):
            ep.load()

    def names(self, pattern: str = "*") -> list[str]:
        self._load_entry_points()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern.lower()))

    def lookup(self, name: str):
        self._load_entry_points()
        key = str(name).lower()
        if key not in self._items:
            raise UnknownNameError(self.unknown_message(name))
        return self._items[key]

    def unknown_message(self, name: str) -> str:
        valid = self.names()
        close = difflib.get_close_matches(str(name).lower(), valid, n=1, cutoff=0.0)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(valid)}"

    def get(self, name: str, **params):
        factory = self.lookup(name)
        check_params(factory, params, f"{self.kind} {name!r}")
        return factory(**params)

    def __contains__(self, name) -> bool:
        return str(name).lower() in self._items


def check_params(factory, params: dict, what: str) -> None:
    """Reject keyword arguments the factory does not accept, naming the accepted ones."""
    sig = inspect.signature(factory)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = [n for n, p in sig.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]
    bad = sorted(set(params) - set(accepted))
    if bad:
        raise ValueError(f"{what} got unknown parameter(s) {bad}; accepted: {accepted}")


MODELS = Registry("model")
DATASETS = Registry("dataset")
DEFENSES = Registry("defense")
ATTACKS = Registry("attack")
