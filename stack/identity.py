"""A node's identity on disk: its Raft id, name and the cluster it belongs to.

Written once (atomically, fsynced) and read on every restart, so a restarted
node rejoins as itself with only `--data-dir`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from stack.errors import ConfigError

FILE = "node.json"


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    id: int
    name: str
    cluster_id: str = ""  # empty until bootstrapped or joined
    datacenter: str = "dc1"

    def with_cluster(self, cluster_id: str) -> NodeIdentity:
        return replace(self, cluster_id=cluster_id)


def new_node_id() -> int:
    return secrets.randbits(62) + 1


def load(data_dir: Path) -> NodeIdentity | None:
    path = data_dir / FILE
    try:
        raw = json.loads(path.read_text())
        return NodeIdentity(
            id=int(raw["id"]),
            name=str(raw["name"]),
            cluster_id=str(raw.get("cluster_id", "")),
            datacenter=str(raw.get("datacenter", "dc1")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is unreadable or corrupt ({e}); refusing to start") from None


def save(data_dir: Path, ident: NodeIdentity) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / FILE
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(asdict(ident), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
