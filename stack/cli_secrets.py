"""`stack secrets`, `stack token create|lookup|renew|revoke`, `stack policy` and
`stack audit`: the secrets engine from the command line, over the native API
(`/v1/secrets/...`, `/v1/acl/...`). Every command takes `--json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stack.cli_common import (
    DEFAULT_ADDR,
    AddrOpt,
    JsonOpt,
    TokenOpt,
    _call,
    _print_json,
    console,
    err_console,
)

secrets_app = typer.Typer(no_args_is_help=True, help="Secrets (KV v2) in the secrets engine.")
policy_app = typer.Typer(no_args_is_help=True, help="ACL policies (Vault's HCL path syntax).")
audit_app = typer.Typer(no_args_is_help=True, help="Audit devices and the audit log.")

MountOpt = Annotated[str, typer.Option("--mount", help="The KV v2 mount.")]


def _send(addr: str, token: str, method: str, path: str, body: Any = None) -> Any:
    raw = None if body is None else json.dumps(body).encode()
    return _call(addr, token, method, path, raw)


def _pairs(items: list[str]) -> dict[str, Any]:
    """key=value, key=@file (the file's text), or one JSON object given as '-' (stdin)."""
    if items == ["-"]:
        try:
            data = json.loads(sys.stdin.read())
        except ValueError:
            err_console.print("[red]error:[/red] stdin is not JSON")
            raise typer.Exit(2) from None
        if not isinstance(data, dict):
            err_console.print("[red]error:[/red] stdin must hold a JSON object")
            raise typer.Exit(2)
        return data
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err_console.print(f"[red]error:[/red] want key=value, got {item!r}")
            raise typer.Exit(2)
        if value.startswith("@"):
            try:
                value = Path(value[1:]).read_text()
            except OSError as e:
                err_console.print(f"[red]error:[/red] cannot read {value[1:]}: {e.strerror}")
                raise typer.Exit(2) from None
        out[key] = value
    return out


def _kv_table(data: dict[str, Any]) -> None:
    t = Table("key", "value")
    for k, v in sorted(data.items()):
        t.add_row(k, v if isinstance(v, str) else json.dumps(v))
    console.print(t)


# ================================================================ secrets
@secrets_app.command("put")
def secrets_put(
    path: str,
    pairs: Annotated[list[str], typer.Argument(help="key=value, key=@file, or - (JSON)")],
    mount: MountOpt = "secret",
    cas: Annotated[int | None, typer.Option(help="Only if the current version is this.")] = None,
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Write a new version of a secret."""
    body: dict[str, Any] = {"data": _pairs(pairs)}
    if cas is not None:
        body["options"] = {"cas": cas}
    data = _send(addr, token, "PUT", f"/v1/secrets/{mount}/data/{path}", body)
    if as_json:
        _print_json(data)
    else:
        console.print(f"version {data['data']['version']} of {mount}/{path}")


@secrets_app.command("patch")
def secrets_patch(
    path: str,
    pairs: Annotated[list[str], typer.Argument(help="key=value, key=@file, or - (JSON)")],
    mount: MountOpt = "secret",
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Merge keys into the current version (a new version; RFC 7386: null removes)."""
    data = _send(addr, token, "PATCH", f"/v1/secrets/{mount}/data/{path}", {"data": _pairs(pairs)})
    if as_json:
        _print_json(data)
    else:
        console.print(f"version {data['data']['version']} of {mount}/{path}")


@secrets_app.command("get")
def secrets_get(
    path: str,
    mount: MountOpt = "secret",
    version: Annotated[int, typer.Option(help="A version (default: the current one).")] = 0,
    field: Annotated[str, typer.Option(help="Print only this key's value.")] = "",
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Read a secret (the current version, or --version N)."""
    q = f"?version={version}" if version else ""
    data = _send(addr, token, "GET", f"/v1/secrets/{mount}/data/{path}{q}")["data"]
    if field:
        value = data["data"].get(field)
        if value is None:
            err_console.print(f"[red]error:[/red] no field {field!r}")
            raise typer.Exit(1)
        sys.stdout.write((value if isinstance(value, str) else json.dumps(value)) + "\n")
    elif as_json:
        _print_json(data)
    else:
        console.print(f"version {data['metadata']['version']}, {data['metadata']['created_time']}")
        _kv_table(data["data"])


@secrets_app.command("list")
def secrets_list(
    prefix: Annotated[str, typer.Argument()] = "",
    mount: MountOpt = "secret",
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """The secrets and folders directly under a prefix."""
    data = _send(addr, token, "GET", f"/v1/secrets/{mount}/metadata/{prefix}?list")
    keys = data["data"]["keys"]
    if as_json:
        _print_json(keys)
    else:
        for k in keys:
            console.print(k)


@secrets_app.command("history")
def secrets_history(
    path: str,
    mount: MountOpt = "secret",
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Every kept version of a secret: created, deleted, destroyed."""
    meta = _send(addr, token, "GET", f"/v1/secrets/{mount}/metadata/{path}")["data"]
    if as_json:
        _print_json(meta)
        return
    t = Table("version", "created", "deleted", "destroyed")
    for n, v in sorted(meta["versions"].items(), key=lambda kv: int(kv[0])):
        current = " (current)" if int(n) == meta["current_version"] else ""
        t.add_row(n + current, v["created_time"], v["deletion_time"], str(v["destroyed"]))
    console.print(t)


@secrets_app.command("delete")
def secrets_delete(
    path: str,
    mount: MountOpt = "secret",
    versions: Annotated[
        str, typer.Option(help="Comma-separated versions (default: the current one).")
    ] = "",
    destroy: Annotated[bool, typer.Option("--destroy", help="Erase them for good.")] = False,
    everything: Annotated[
        bool, typer.Option("--all", help="Delete every version and the metadata.")
    ] = False,
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
) -> None:
    """Soft-delete versions (undo with the API's undelete), destroy them, or --all."""
    nums = [int(v) for v in versions.split(",") if v.strip()]
    if everything:
        _send(addr, token, "DELETE", f"/v1/secrets/{mount}/metadata/{path}")
        console.print(f"deleted {mount}/{path} and all its versions")
    elif destroy:
        if not nums:
            err_console.print("[red]error:[/red] --destroy needs --versions")
            raise typer.Exit(2)
        _send(addr, token, "PUT", f"/v1/secrets/{mount}/destroy/{path}", {"versions": nums})
        console.print(f"destroyed versions {nums} of {mount}/{path}")
    elif nums:
        _send(addr, token, "POST", f"/v1/secrets/{mount}/delete/{path}", {"versions": nums})
        console.print(f"deleted versions {nums} of {mount}/{path}")
    else:
        _send(addr, token, "DELETE", f"/v1/secrets/{mount}/data/{path}")
        console.print(f"deleted the current version of {mount}/{path}")


# ================================================================ tokens
def _auth_out(data: dict[str, Any], as_json: bool) -> None:
    auth = data["auth"]
    if as_json:
        _print_json(auth)
        return
    t = Table(show_header=False, box=None)
    for key in ("client_token", "accessor", "policies", "lease_duration", "renewable", "orphan"):
        value = auth.get(key)
        t.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(t)


def token_create(
    policy: Annotated[list[str] | None, typer.Option("--policy", help="Repeat.")] = None,
    ttl: Annotated[str, typer.Option(help="e.g. 1h, 30m (default 768h).")] = "",
    explicit_max_ttl: Annotated[str, typer.Option(help="A hard limit on renewals.")] = "",
    period: Annotated[str, typer.Option(help="A periodic token renewed to this.")] = "",
    uses: Annotated[int, typer.Option(help="Uses before it is revoked (0: unlimited).")] = 0,
    orphan: Annotated[bool, typer.Option("--orphan", help="No parent.")] = False,
    role: Annotated[str, typer.Option(help="Create from this token role.")] = "",
    display_name: Annotated[str, typer.Option()] = "",
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """A new token (a child of yours unless --orphan)."""
    body: dict[str, Any] = {"num_uses": uses}
    if policy:
        body["policies"] = policy
    for key, value in (
        ("ttl", ttl),
        ("explicit_max_ttl", explicit_max_ttl),
        ("period", period),
        ("display_name", display_name),
    ):
        if value:
            body[key] = value
    path = f"create/{role}" if role else "create-orphan" if orphan else "create"
    _auth_out(_send(addr, token, "POST", f"/v1/acl/token/{path}", body), as_json)


def token_lookup(
    other: Annotated[str, typer.Argument(help="A token (default: your own).")] = "",
    accessor: Annotated[str, typer.Option(help="Look up by accessor.")] = "",
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """What a token is: policies, TTL, uses left, parentage."""
    if accessor:
        data = _send(addr, token, "POST", "/v1/acl/token/lookup-accessor", {"accessor": accessor})
    elif other:
        data = _send(addr, token, "POST", "/v1/acl/token/lookup", {"token": other})
    else:
        data = _send(addr, token, "GET", "/v1/acl/token/self")
    info = data["data"]
    if as_json:
        _print_json(info)
        return
    t = Table(show_header=False, box=None)
    for key in ("accessor", "display_name", "policies", "ttl", "expire_time", "num_uses",
                "renewable", "orphan", "period", "path"):  # fmt: skip
        value = info.get(key)
        t.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console.print(t)


def token_renew(
    other: Annotated[str, typer.Argument(help="A token (default: your own).")] = "",
    increment: Annotated[str, typer.Option(help="e.g. 1h (default: its TTL).")] = "",
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Extend a token's TTL (up to its maximum)."""
    body: dict[str, Any] = {"increment": increment} if increment else {}
    if other:
        body["token"] = other
        data = _send(addr, token, "POST", "/v1/acl/token/renew", body)
    else:
        data = _send(addr, token, "POST", "/v1/acl/token/renew-self", body)
    _auth_out(data, as_json)


def token_revoke(
    other: Annotated[str, typer.Argument(help="A token (default: your own).")] = "",
    accessor: Annotated[str, typer.Option(help="Revoke by accessor.")] = "",
    orphan_children: Annotated[
        bool, typer.Option("--orphan-children", help="Keep its children (as orphans).")
    ] = False,
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
) -> None:
    """Revoke a token and, unless --orphan-children, every token it created."""
    if accessor:
        _send(addr, token, "POST", "/v1/acl/token/revoke-accessor", {"accessor": accessor})
    elif other:
        path = "revoke-orphan" if orphan_children else "revoke"
        _send(addr, token, "POST", f"/v1/acl/token/{path}", {"token": other})
    else:
        _send(addr, token, "POST", "/v1/acl/token/revoke-self", {})
    console.print("revoked")


# ================================================================ policies
@policy_app.command("write")
def policy_write(
    name: str,
    file: Annotated[str, typer.Argument(help="An HCL or JSON file, or - for stdin.")],
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
) -> None:
    """Create or replace a policy."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as e:
        err_console.print(f"[red]error:[/red] cannot read {file}: {e.strerror}")
        raise typer.Exit(2) from None
    _send(addr, token, "PUT", f"/v1/acl/policy/{name}", {"policy": text})
    console.print(f"policy {name} written")


@policy_app.command("read")
def policy_read(
    name: str, addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Print a policy's text."""
    data = _send(addr, token, "GET", f"/v1/acl/policy/{name}")["data"]
    if as_json:
        _print_json(data)
    else:
        sys.stdout.write(data["policy"].rstrip("\n") + "\n")


@policy_app.command("list")
def policy_list(
    addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Every policy name."""
    keys = _send(addr, token, "GET", "/v1/acl/policy")["data"]["keys"]
    if as_json:
        _print_json(keys)
    else:
        for k in keys:
            console.print(k)


@policy_app.command("delete")
def policy_delete(name: str, addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "") -> None:
    """Delete a policy (tokens holding it lose what it granted at once)."""
    _send(addr, token, "DELETE", f"/v1/acl/policy/{name}")
    console.print(f"policy {name} deleted")


# ================================================================ audit
@audit_app.command("enable")
def audit_enable(
    name: str,
    file_path: Annotated[
        str, typer.Option("--file", help="Log file; {node} is the node's name; relative: data dir.")
    ],
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
) -> None:
    """Enable a file audit device on every node."""
    body = {"type": "file", "options": {"file_path": file_path}}
    _send(addr, token, "PUT", f"/v1/secrets/sys/audit/{name}", body)
    console.print(f"audit device {name}/ enabled")


@audit_app.command("list")
def audit_list(
    addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """The enabled audit devices."""
    data = _send(addr, token, "GET", "/v1/secrets/sys/audit")["data"] or {}
    if as_json:
        _print_json(data)
        return
    t = Table("path", "type", "file")
    for path, dev in sorted(data.items()):
        t.add_row(path, dev["type"], dev["options"].get("file_path", ""))
    console.print(t)


@audit_app.command("disable")
def audit_disable(name: str, addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "") -> None:
    """Disable an audit device."""
    _send(addr, token, "DELETE", f"/v1/secrets/sys/audit/{name}")
    console.print(f"audit device {name}/ disabled")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[Path, typer.Argument(help="An audit log file.")],
    as_json: JsonOpt = False,
) -> None:
    """Check an audit log's hash chain; names every line that was edited, removed or
    reordered (exit 1), or says it is intact (exit 0). Works offline."""
    from stack.vault import audit

    if as_json:
        try:
            res = audit.verify(file)
        except OSError as e:
            err_console.print(f"[red]error:[/red] cannot read {file}: {e.strerror}")
            raise typer.Exit(2) from None
        _print_json(
            {
                "ok": res.ok,
                "lines": res.lines,
                "problems": [{"line": p.line, "reason": p.reason} for p in res.problems],
                "warnings": [{"line": w.line, "reason": w.reason} for w in res.warnings],
            }
        )
        raise typer.Exit(0 if res.ok else 1)
    raise typer.Exit(audit.verify_cli(file))


def attach(app: typer.Typer, token_app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")
    app.add_typer(policy_app, name="policy")
    app.add_typer(audit_app, name="audit")
    token_app.command("create")(token_create)
    token_app.command("lookup")(token_lookup)
    token_app.command("renew")(token_renew)
    token_app.command("revoke")(token_revoke)
