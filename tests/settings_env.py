"""Env names the settings classes read, per component, for checking deployment files against the code.

Every ``BaseSettings`` subclass in ``shared/config/`` is found by import, so the edge and cloud settings
are picked up as soon as their modules exist. Names are upper-cased: settings are case-insensitive.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import shared.config

#: Deployment files name the component they configure; these are the settings class of each.
COMPONENT_CLASSES = {
    "edge": "shared.config.edge.EdgeSettings",
    "cloud": "shared.config.cloud.CloudSettings",
    "provision": "shared.config.provision.ProvisionSettings",
    "monitor": "shared.config.monitor.MonitorSettings",
}


def field_env_names(cls: type[BaseSettings]) -> set[str]:
    """Every env name ``cls`` reads, upper-cased."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    result: set[str] = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            result |= {str(choice).upper() for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            result.add(alias.upper())
        else:
            result.add(f"{prefix}{name}".upper())
    return result


@cache
def settings_classes() -> dict[str, type[BaseSettings]]:
    """``module.Class`` -> class, for every settings class under shared/config/."""
    for module in pkgutil.iter_modules(shared.config.__path__):
        importlib.import_module(f"shared.config.{module.name}")
    found: dict[str, type[BaseSettings]] = {}
    pending = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("shared.config."):
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


@cache
def all_env_names() -> frozenset[str]:
    """What any mistnet command reads."""
    return frozenset(n for cls in settings_classes().values() for n in field_env_names(cls))


@cache
def component_env_names(component: str) -> frozenset[str]:
    """What ``component`` (edge, cloud, provision, monitor) reads; every name if its class is not built yet."""
    cls = settings_classes().get(COMPONENT_CLASSES[component])
    return frozenset(field_env_names(cls)) if cls is not None else all_env_names()


def unknown_names(names: dict[str, str], component: str) -> list[str]:
    """``{env name: where}`` entries that ``component`` does not read, as 'where: NAME' lines."""
    known = component_env_names(component)
    return sorted(f"{where}: {name}" for name, where in names.items() if name.upper() not in known)
