"""The settings reference of README.md, generated from the settings classes (a test keeps them equal).

Run ``python -m mistnet.settings_doc`` to print it; ``--write README.md`` replaces the marked section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from shared.config.base import CommonSettings
from shared.config.cloud import CloudSettings
from shared.config.edge import EdgeSettings
from shared.config.monitor import MonitorSettings
from shared.config.provision import ProvisionSettings

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
SECTIONS: tuple[tuple[str, type[BaseSettings]], ...] = (
    ("Every daemon (`mistnet edge`, `mistnet cloud`)", CommonSettings),
    ("Edge only (`mistnet edge`)", EdgeSettings),
    ("Cloud only (`mistnet cloud`)", CloudSettings),
    ("Monitor (`mistnet monitor`)", MonitorSettings),
    ("Provisioning (`mistnet provision`)", ProvisionSettings),
)


def _env_names(info: FieldInfo, name: str) -> str:
    choices = getattr(info.validation_alias, "choices", None) or [name]
    return ", ".join(f"`{str(c).upper()}`" for c in choices)


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "-"
    shown = getattr(value, "value", value)
    text = "`***`" if "Secret" in type(value).__name__ else f"`{shown}`"
    return text.replace("|", "\\|")


def render_settings_table() -> str:
    """Markdown: per settings class, the fields it adds: flag, env names, default, description."""
    out: list[str] = []
    seen: set[str] = set()
    for title, cls in SECTIONS:
        fields = {n: f for n, f in cls.model_fields.items() if n not in seen or cls is not CommonSettings}
        if cls in (EdgeSettings, CloudSettings):
            fields = {n: f for n, f in fields.items() if n not in CommonSettings.model_fields}
        seen |= set(fields)
        out += [f"#### {title}", "", "| flag | env | default | meaning |", "|---|---|---|---|"]
        for name, info in fields.items():
            description = (info.description or "").replace("|", "\\|")
            out.append(
                f"| `--{name.replace('_', '-')}` | {_env_names(info, name)} | {_default(info)} | {description} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def replace_section(text: str, table: str) -> str:
    """``text`` with the part between the settings markers replaced by ``table``."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="file whose marked settings section is replaced")
    args = parser.parse_args(argv)
    table = render_settings_table()
    if args.write is None:
        sys.stdout.write(table)
    else:
        args.write.write_text(replace_section(args.write.read_text(), table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
