"""Acknowledged secret versions survive a SIGKILLed leader (writes flowing) and a
full cluster restart, readable again with no human step (the cluster unseals
itself); tokens survive too."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    FORM_TIMEOUT,
    Harness,
    Node,
    wait_leader,
    wait_until,
)

pytestmark = pytest.mark.slow


class SecretWriters:
    """Threads writing new versions of a few secrets through the native API on
    round-robin nodes; `acked[(path, version)]` is the value a 200 acknowledged."""

    def __init__(self, targets: list[Node], token: str, threads: int = 3) -> None:
        self.targets = targets
        self.token = token
        self.acked: dict[tuple[str, int], str] = {}
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                         for t in range(threads)]  # fmt: skip

    def start(self) -> SecretWriters:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(40)
            assert not t.is_alive(), "a writer thread is stuck"

    def _run(self, t: int) -> None:
        i = 0
        while not self._stop.is_set():
            path = f"durable/t{t}/s{i % 4}"
            value = f"secret {t}-{i} {time.monotonic_ns()}"
            node = self.targets[(t + i) % len(self.targets)]
            try:
                resp = node.request(
                    "PUT", f"/v1/secrets/secret/data/{path}",
                    json.dumps({"data": {"value": value}}).encode(), token=self.token,
                )  # fmt: skip
                if resp.status == 200:
                    version = int(resp.json()["data"]["version"])
                    with self._lock:
                        self.acked[(path, version)] = value
                else:
                    self.failures += 1
                    time.sleep(0.05)
            except OSError:
                self.failures += 1
                time.sleep(0.05)
            i += 1


def read_version(node: Node, token: str, path: str, version: int) -> Any:
    resp = node.request("GET", f"/v1/secrets/secret/data/{path}?version={version}", token=token)
    assert resp.status == 200, (node.name, path, version, resp.status, resp.body[:200])
    return resp.json()["data"]["data"]["value"]


def check_all(node: Node, token: str, acked: dict[tuple[str, int], str]) -> None:
    for (path, version), value in sorted(acked.items()):
        assert read_version(node, token, path, version) == value, (node.name, path, version)


@pytest.mark.timeout(300)
def test_acknowledged_versions_survive_leader_kill_and_full_restart(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = Harness(request, tmp_path)
    nodes = h.three_nodes()
    leader = wait_leader(nodes)
    # max_versions high enough that nothing acknowledged is pruned on purpose.
    r = leader.request("POST", "/v1/secrets/secret/config",
                       json.dumps({"max_versions": 1000}).encode(), token=h.token)  # fmt: skip
    assert r.status == 204, r.body
    tok = leader.request("POST", "/v1/acl/token/create",
                         json.dumps({"policies": ["default"], "ttl": "2h"}).encode(),
                         token=h.token)  # fmt: skip
    assert tok.status == 200, tok.body
    child = tok.json()["auth"]["client_token"]

    writers = SecretWriters(nodes, h.token).start()
    try:
        wait_until(lambda: len(writers.acked) >= 30, FORM_TIMEOUT, "some acknowledged writes")
        leader.kill()
        survivors = [n for n in nodes if n is not leader]
        wait_leader(survivors)
        before = len(writers.acked)
        wait_until(lambda: len(writers.acked) >= before + 20, FORM_TIMEOUT,
                   "writes acknowledged by the new leader")  # fmt: skip
    finally:
        writers.stop()
    acked = dict(writers.acked)
    print(f"{len(acked)} versions acknowledged, {writers.failures} failed attempts")
    for n in survivors:
        check_all(n, h.token, acked)

    # The old leader comes back and catches up; then the whole cluster is killed
    # and restarted: it unseals by itself and every version reads back everywhere.
    leader.start()
    wait_until(lambda: not leader.status()["sealed"], FORM_TIMEOUT, "the old leader to unseal")
    for n in nodes:
        n.signal(signal.SIGKILL)
    for n in nodes:
        n.wait_exit(30)
    for n in nodes:
        n.start()
    wait_leader(nodes, FORM_TIMEOUT)
    wait_until(lambda: all(not n.status()["sealed"] for n in nodes), FORM_TIMEOUT,
               "every server unsealed with no human step")  # fmt: skip
    for n in nodes:
        check_all(n, h.token, acked)
    me = nodes[1].request("GET", "/v1/acl/token/self", token=child)
    assert me.status == 200 and me.json()["data"]["policies"] == ["default"], me.body
