"""Defenses, one module each; importing this package registers them all."""
import importlib
import pkgutil

from defenses.base import Defense, PostProcessor, get_defense, list_defenses, register_defense

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"defenses.{_m.name}")

__all__ = ["Defense", "PostProcessor", "get_defense", "list_defenses", "register_defense"]
