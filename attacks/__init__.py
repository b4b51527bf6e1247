"""Model-stealing attacks, one module each; importing this package registers them all."""
import importlib
import pkgutil

from attacks.base import Attack, AttackContext, get_attack, list_attacks, register_attack

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"attacks.{_m.name}")

__all__ = ["Attack", "AttackContext", "get_attack", "list_attacks", "register_attack"]
