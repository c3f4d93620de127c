"""Node configuration: defaults < config file (HCL or JSON) < STACK_* environment < flags."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.errors import ConfigError

DEFAULT_HTTP_PORT = 7480
DEFAULT_RPC_PORT = 7481
DEFAULT_GOSSIP_PORT = 7482
DEFAULT_VAULT_PORT = 8200
GOSSIP_PROFILES = ("lan", "wan", "local")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "stack"


def default_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stack"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    name: str = ""
    bind: str = "127.0.0.1"
    advertise: str = ""
    datacenter: str = "dc1"
    http_port: int = DEFAULT_HTTP_PORT
    rpc_port: int = DEFAULT_RPC_PORT
    gossip_port: int = DEFAULT_GOSSIP_PORT
    # The Vault-compatible API (hvac, the vault CLI); -1 turns it off.
    vault_port: int = DEFAULT_VAULT_PORT
    # The ring's timing preset (stack/gossip/config.py): lan, wan or local.
    gossip_profile: str = "lan"
    # Autopilot: a server dead in the ring this long (seconds) leaves the voters,
    # never taking them below min_quorum. 30 s rides out a 10 s pause (a stopped
    # VM, a long GC) plus the ~6 s it takes to be declared dead.
    dead_server_grace: float = 30.0
    min_quorum: int = 3
    join: tuple[str, ...] = ()
    retry_join: tuple[str, ...] = ()
    bootstrap_expect: int = 0
    token: str = ""
    server: bool = True
    log_level: str = "info"
    log_json: bool = False
    # Raft timing: one tick is tick_ms; elections after 10-20 ticks of silence.
    tick_ms: int = 100
    election_ticks: int = 10
    snapshot_threshold: int = 16384
    config_dir: Path = field(default_factory=default_config_dir)
    # Node certificates live 90 days and renew at half-life, so a cluster switched
    # off for up to 45 days comes back on its own (docs/security.md).
    cert_ttl: int = 90 * 86400
    seal_key_file: str = ""  # where a single server keeps its unseal share

    @property
    def advertise_addr(self) -> str:
        return self.advertise or self.bind

    @property
    def node_name(self) -> str:
        if self.name:
            return self.name
        host = socket.gethostname()
        return host if self.bind in ("127.0.0.1", "0.0.0.0") else f"{host}-{self.bind}"

    def validate(self) -> None:
        if not -1 <= self.vault_port <= 65535:
            raise ConfigError(f"vault_port must be 0-65535 (or -1: off), got {self.vault_port}")
        for port_name in ("http_port", "rpc_port", "gossip_port"):
            port = getattr(self, port_name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{port_name} must be 0-65535, got {port}")
        if self.bootstrap_expect < 0:
            raise ConfigError("bootstrap_expect must be >= 0")
        if self.bootstrap_expect > 1 and not self.retry_join and not self.join:
            raise ConfigError("bootstrap_expect > 1 needs retry_join addresses to find peers")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error: {self.log_level}")
        for addr in (*self.join, *self.retry_join):
            parse_hostport(addr, DEFAULT_RPC_PORT)
        if self.bootstrap_expect > 1 and not self.token:
            raise ConfigError(
                "bootstrap_expect > 1 needs --token: the same secret on every server "
                "(it becomes the cluster's join secret)"
            )
        if self.cert_ttl < 10:
            raise ConfigError("cert_ttl must be at least 10 seconds")
        if self.gossip_profile not in GOSSIP_PROFILES:
            raise ConfigError(
                f"gossip_profile must be one of {', '.join(GOSSIP_PROFILES)}: "
                f"{self.gossip_profile!r}"
            )
        if self.dead_server_grace < 0:
            raise ConfigError("dead_server_grace must be >= 0 seconds")
        if self.min_quorum < 1:
            raise ConfigError("min_quorum must be >= 1")
        if self.tick_ms <= 0 or self.election_ticks < 2:
            raise ConfigError("tick_ms must be > 0 and election_ticks >= 2")


_FIELDS = {f.name: f for f in dataclasses.fields(AgentConfig)}
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_hostport(addr: str, default_port: int) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, default_port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad address {addr!r}: want HOST or HOST:PORT")
    return host, int(port)


def _coerce(name: str, value: Any) -> Any:
    f = _FIELDS.get(name)
    if f is None:
        raise ConfigError(f"unknown setting {name!r}")
    kind = str(f.type)
    try:
        if "tuple" in kind:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise TypeError
            return tuple(value)
        if "bool" in kind:
            if isinstance(value, str):
                return _BOOL_WORDS[value.lower()]
            if not isinstance(value, bool):
                raise TypeError
            return value
        if "int" in kind:
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if "float" in kind:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if "Path" in kind:
            return Path(str(value)).expanduser()
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError, KeyError):
        raise ConfigError(f"setting {name!r} has a bad value: {value!r}") from None


def load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON: {e}") from None
    else:
        import hcl2
        from hcl2.utils import SerializationOptions

        try:
            data = hcl2.loads(
                text,
                serialization_options=SerializationOptions(
                    strip_string_quotes=True, with_comments=False
                ),
            )
        except Exception as e:  # the HCL parser raises several unrelated types
            raise ConfigError(f"{path}: invalid HCL: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be an object")
    return {k: _coerce(k, v) for k, v in data.items()}


def from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        key = "STACK_" + name.upper()
        if key in environ:
            out[name] = _coerce(name, environ[key])
    return out


# What a node remembers about how it was started, so a restart needs only --data-dir.
REMEMBERED = (
    "name",
    "bind",
    "advertise",
    "datacenter",
    "http_port",
    "rpc_port",
    "gossip_port",
    "vault_port",
    "server",
)
SETTINGS_FILE = "settings.json"


def remembered(data_dir: Path) -> dict[str, Any]:
    path = data_dir / SETTINGS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is unreadable ({e}); fix or delete it") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return {k: _coerce(k, v) for k, v in raw.items() if k in REMEMBERED}


def remember(cfg: AgentConfig) -> None:
    path = Path(cfg.data_dir) / SETTINGS_FILE
    data = {k: getattr(cfg, k) for k in REMEMBERED}
    data["name"] = cfg.node_name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def build(flags: dict[str, Any], config_file: Path | None, environ: dict[str, str]) -> AgentConfig:
    """Merge the layers: defaults < what the data dir remembers < config file < STACK_*
    environment < flags. `flags` holds only the flags the user actually gave."""
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(load_file(config_file))
    merged.update(from_env(environ))
    merged.update({k: _coerce(k, v) for k, v in flags.items() if v is not None})
    data_dir = merged.get("data_dir") or default_data_dir()
    cfg = AgentConfig(**{**remembered(Path(data_dir)), **merged})
    cfg.validate()
    return cfg
