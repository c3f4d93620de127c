"""This node's audit devices, following the replicated configuration.

Each enabled device (`sys/audit/<path>`, type `file`) is one hash-chained log
(`audit.py`) written by this node: `file_path` may hold `{node}`, replaced by the
node's name (so nodes on one machine do not share a file); a relative path is
under the node's data directory. Every request is written before it is executed
and its response after; with no device enabled nothing is written (Vault's
default). A device that cannot be written makes the request fail with 503.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from stack.state import audit as auditstate
from stack.vault.audit import AuditLog
from stack.vault.logical import Operation, Request, Response

if TYPE_CHECKING:
    from stack.vault.service import SecretsService

log = structlog.get_logger("stack.audit")

SALT_AAD = b"stack/audit/salt"


class Auditing:
    def __init__(self, service: SecretsService) -> None:
        self.service = service
        self._logs: dict[str, tuple[str, AuditLog]] = {}  # device path -> (file, log)
        self._index = -1

    def file_for(self, device: auditstate.AuditDevice) -> Path:
        a = self.service.agent
        raw = device.options.get("file_path", "") or f"audit/{device.path.strip('/')}.log"
        path = Path(raw.replace("{node}", a.ident.name))
        return path if path.is_absolute() else Path(a.cfg.data_dir) / path

    def _sync(self) -> list[AuditLog]:
        a = self.service.agent
        index = a.store.query_index(auditstate.AUDIT_TABLE, "", prefix=True)
        if index != self._index:
            self._index = index
            wanted = {d.path: d for d in auditstate.devices(a.store)}
            for path in [p for p in self._logs if p not in wanted]:
                self._logs.pop(path)[1].close()
            salt = auditstate.salt(a.store)
            if wanted and salt is not None:
                key = a.barrier.decrypt(salt, SALT_AAD)
                for path, device in wanted.items():
                    file = str(self.file_for(device))
                    have = self._logs.get(path)
                    if have is None or have[0] != file:
                        if have is not None:
                            have[1].close()
                        self._logs[path] = (
                            file, AuditLog(Path(file), key, node=a.ident.name)
                        )  # fmt: skip
        return [lg for _, lg in self._logs.values()]

    def request_entry(self, req: Request, op: Operation, token: Any) -> dict[str, Any]:
        return {
            "id": req.id,
            "operation": op.value,
            "path": req.path,
            "client_token": req.token,
            "client_token_accessor": getattr(token, "accessor", ""),
            "remote_address": req.remote,
            "data": req.data,
            "policies": list(getattr(token, "policies", [])),
        }

    async def log_request(self, entry: dict[str, Any]) -> None:
        for lg in self._sync():
            await lg.log_request(entry)

    async def log_response(self, entry: dict[str, Any], resp: Response, error: str | None) -> None:
        data = resp.data
        if data and isinstance(data.get("http_raw_body"), bytes | bytearray):
            data = {**data, "http_raw_body": f"<{len(data['http_raw_body'])} bytes>"}
        body = {"status": resp.status, "data": data, "auth": resp.auth, "error": error}
        for lg in self._sync():
            await lg.log_response(entry, body)

    def close(self) -> None:
        for _, lg in self._logs.values():
            lg.close()
        self._logs.clear()
