"""A small client for the RabbitMQ management HTTP API (users, permissions, vhosts, inspection)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class ManagementError(RuntimeError):
    """The management API refused a call or is not reachable."""


@dataclass(frozen=True)
class ManagementClient:
    """``base_url`` like http://127.0.0.1:15672; the user needs the administrator tag to provision."""

    base_url: str
    user: str
    password: str
    timeout_s: float = 10.0

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base_url.rstrip('/')}/api/{path}", data=data, method=method)  # noqa: S310 - operator-given URL
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise ManagementError(f"{method} /api/{path} failed with HTTP {exc.code}: {detail}") from exc
        except OSError as exc:
            raise ManagementError(
                f"RabbitMQ management API at {self.base_url} is not reachable ({exc}); enable it with "
                "`rabbitmq-plugins enable rabbitmq_management`"
            ) from exc
        return json.loads(payload) if payload else None

    @staticmethod
    def _q(value: str) -> str:
        return urllib.parse.quote(value, safe="")

    def overview(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "overview")
        return result

    def put_vhost(self, vhost: str) -> None:
        self._call("PUT", f"vhosts/{self._q(vhost)}", {})

    def delete_vhost(self, vhost: str) -> None:
        self._call("DELETE", f"vhosts/{self._q(vhost)}")

    def put_user(self, user: str, password: str, tags: str = "") -> None:
        self._call("PUT", f"users/{self._q(user)}", {"password": password, "tags": tags})

    def delete_user(self, user: str) -> None:
        self._call("DELETE", f"users/{self._q(user)}")

    def user_exists(self, user: str) -> bool:
        try:
            self._call("GET", f"users/{self._q(user)}")
        except ManagementError as exc:
            if "HTTP 404" in str(exc):
                return False
            raise
        return True

    def put_policy(self, vhost: str, name: str, pattern: str, definition: dict[str, Any], apply_to: str) -> None:
        """Create or replace policy ``name`` (``apply_to``: queues, exchanges or all)."""
        self._call(
            "PUT",
            f"policies/{self._q(vhost)}/{self._q(name)}",
            {"pattern": pattern, "definition": definition, "apply-to": apply_to, "priority": 0},
        )

    def put_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        self._call(
            "PUT",
            f"permissions/{self._q(vhost)}/{self._q(user)}",
            {"configure": configure, "write": write, "read": read},
        )

    def put_topic_permissions(self, vhost: str, user: str, exchange: str, write: str, read: str) -> None:
        self._call(
            "PUT",
            f"topic-permissions/{self._q(vhost)}/{self._q(user)}",
            {"exchange": exchange, "write": write, "read": read},
        )

    def import_definitions(self, vhost: str, definitions: dict[str, Any]) -> None:
        """Import exchanges, queues, bindings and policies into ``vhost`` (the vhost fields are ignored)."""
        self._call("POST", f"definitions/{self._q(vhost)}", definitions)

    def exchanges(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"exchanges/{self._q(vhost)}")
        return result

    def queues(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"queues/{self._q(vhost)}")
        return result

    def bindings(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"bindings/{self._q(vhost)}")
        return result

    def policies(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"policies/{self._q(vhost)}")
        return result

    def permissions(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"vhosts/{self._q(vhost)}/permissions")
        return result

    def topic_permissions(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"vhosts/{self._q(vhost)}/topic-permissions")
        return result

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"queues/{self._q(vhost)}/{self._q(name)}")
        return result
