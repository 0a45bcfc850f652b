"""Which password each provisioned broker user gets, and the 0600 passwords file that keeps them."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: given: from MISTNET_PASSWORDS; file: from the passwords file; kept: an existing user keeps its own;
#: generated: new random password (printed once, or written to the passwords file).
PasswordSource = Literal["given", "file", "kept", "generated"]


@dataclass(frozen=True)
class PlannedUser:
    """One broker user to provision; ``password`` is empty when the existing password is kept."""

    user: str
    role: Literal["edge", "cloud", "monitor"]
    password: str
    source: PasswordSource
    edge: str | None = None


def generate_password() -> str:
    """A random 32-character URL-safe password (192 bits)."""
    return secrets.token_urlsafe(24)


def plan_users(
    users: Iterable[tuple[str, Literal["edge", "cloud", "monitor"], str | None]],
    *,
    given: dict[str, str],
    from_file: dict[str, str],
    exists: Callable[[str], bool],
    reset: bool,
    generate: Callable[[], str] = generate_password,
) -> list[PlannedUser]:
    """Pick each ``(user, role, edge)``'s password: given > file > kept (existing user, no reset) > generated."""
    planned = []
    for user, role, edge in users:
        if user in given:
            password, source = given[user], "given"
        elif user in from_file:
            password, source = from_file[user], "file"
        elif not reset and exists(user):
            password, source = "", "kept"
        else:
            password, source = generate(), "generated"
        planned.append(PlannedUser(user, role, password, source, edge))  # type: ignore[arg-type]
    return planned


def read_passwords_file(path: Path) -> dict[str, str]:
    """``{user: password}`` from ``path``; a missing file is empty, a malformed one is an error naming it."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"passwords file {path} is not readable JSON ({exc}); expected {{user: password}}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"passwords file {path} must hold one JSON object of user -> password strings")
    return data


def write_passwords_file(path: Path, passwords: dict[str, str]) -> None:
    """Merge ``passwords`` into ``path`` atomically, readable by its owner only (mode 0600)."""
    merged = {**read_passwords_file(path), **passwords}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(merged, fh, indent=2, sort_keys=True)
        fh.write("\n")
    tmp.chmod(0o600)
    tmp.replace(path)
