"""Clients of a node's Vault-compatible port for the real-process tests: hvac
clients closed with the test, and one raw request."""

from __future__ import annotations

import json
from typing import Any

import hvac
import pytest
from cluster import VAULT_PORT, Node, Response, http_request


class Clients:
    """hvac clients for one test, their HTTP sessions closed at the end. `token` is
    the default for every client; "" means none (and none from the environment)."""

    def __init__(self, request: pytest.FixtureRequest, token: str = "") -> None:
        self.token = token
        self._open: list[hvac.Client] = []
        request.addfinalizer(self.close)

    def __call__(self, node: Node, token: str | None = None) -> hvac.Client:
        token = self.token if token is None else token
        c = hvac.Client(url=f"http://{node.addr}:{VAULT_PORT}", token=token, timeout=20)
        self._open.append(c)
        return c

    def close(self) -> None:
        for c in self._open:
            c.adapter.close()


def raw(
    node: Node,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request to the Vault port; a dict or list body is sent as JSON, bytes as is."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["X-Vault-Token"] = token
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return http_request(node.addr, VAULT_PORT, method, path, data, headers=hdrs)
