"""Subcommands that compose shared pieces for one task (eval, detect, provision)."""
