"""Settings of every daemon and command (pydantic-settings; env names case-insensitive, DESIGN §6)."""
