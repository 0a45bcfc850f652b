"""Flags shared by several subcommands, and turning flags into settings (flags win over env)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TypeVar

from pydantic_settings import BaseSettings

from shared.config.base import SettingsError, load_settings

S = TypeVar("S", bound=BaseSettings)


def add_settings_flags(
    parser: argparse.ArgumentParser, cls: type[BaseSettings], *, skip: frozenset[str] = frozenset()
) -> None:
    """One ``--flag`` per settings field (default None = take the env or the field default)."""
    for name, info in cls.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        env = "/".join(str(c).upper() for c in getattr(info.validation_alias, "choices", [])) or name.upper()
        help_text = f"{info.description or ''} [env {env}]".strip()
        if info.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)


def settings_from_args(cls: type[S], args: argparse.Namespace, **extra: Any) -> S:
    """Build ``cls`` from env plus the flags given; a bad value exits 2 with one line naming it."""
    given = {name: getattr(args, name) for name in cls.model_fields if getattr(args, name, None) is not None}
    given.update({k: v for k, v in extra.items() if v is not None})
    try:
        return load_settings(cls, **given)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
