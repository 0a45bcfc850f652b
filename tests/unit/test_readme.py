"""README.md stays true to the code: its settings reference and its command list."""

from __future__ import annotations

from pathlib import Path

from mistnet.cli import SUBCOMMANDS
from mistnet.settings_doc import BEGIN, END, render_settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


class TestReadme:
    """The settings tables are the generated ones; every subcommand is documented."""

    def test_settings_section_is_generated(self) -> None:
        text = README.read_text()
        section = text.split(BEGIN, 1)[1].split(END, 1)[0]
        assert section.strip() == render_settings_table().strip(), (
            "README settings are stale: run `python -m mistnet.settings_doc --write README.md`"
        )

    def test_every_subcommand_is_documented(self) -> None:
        text = README.read_text()
        missing = [name for name in SUBCOMMANDS if f"mistnet {name}" not in text]
        assert missing == []
