"""`stack`: one command to run a node, and the commands people use against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from stack import cli_secrets
from stack import config as config_mod
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
from stack.errors import ConfigError, StackError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
operator_app = typer.Typer(no_args_is_help=True, help="Cluster operations.")
raft_app = typer.Typer(no_args_is_help=True, help="Raft peers.")
kv_app = typer.Typer(no_args_is_help=True, help="The cluster key/value table (not for secrets).")
ca_app = typer.Typer(no_args_is_help=True, help="The cluster's one certificate authority.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens and join tokens.")
keyring_app = typer.Typer(no_args_is_help=True, help="The gossip ring's keyring.")
operator_app.add_typer(raft_app, name="raft")
app.add_typer(operator_app, name="operator")
app.add_typer(kv_app, name="kv")
app.add_typer(ca_app, name="ca")
app.add_typer(token_app, name="token")
app.add_typer(keyring_app, name="keyring")


# ================================================================ stack up
@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Where this node keeps its data.")] = None,
    name: Annotated[str | None, typer.Option(help="Node name (default: host name).")] = None,
    bind: Annotated[str | None, typer.Option(help="Address every listener binds.")] = None,
    advertise: Annotated[str | None, typer.Option(help="Address peers use to reach us.")] = None,
    datacenter: Annotated[str | None, typer.Option(help="Datacenter name.")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP API port.")] = None,
    rpc_port: Annotated[int | None, typer.Option(help="Cluster RPC port.")] = None,
    gossip_port: Annotated[int | None, typer.Option(help="Gossip ring port (UDP+TCP).")] = None,
    vault_port: Annotated[
        int | None, typer.Option(help="Vault-compatible API port (-1: off).")
    ] = None,
    gossip_profile: Annotated[
        str | None, typer.Option(help="Ring timing: lan (default), wan or local.")
    ] = None,
    dead_server_grace: Annotated[
        float | None, typer.Option(help="Seconds a server is dead before leaving the voters.")
    ] = None,
    min_quorum: Annotated[
        int | None, typer.Option(help="Autopilot never takes the voters below this.")
    ] = None,
    join: Annotated[list[str] | None, typer.Option(help="HOST:PORT of a member to join.")] = None,
    retry_join: Annotated[
        list[str] | None, typer.Option(help="HOST:PORT of servers to find (repeat).")
    ] = None,
    bootstrap_expect: Annotated[
        int | None, typer.Option(help="Form a cluster once this many servers meet.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Join token (or, with --bootstrap-expect, a shared secret).")
    ] = None,
    server: Annotated[bool | None, typer.Option("--server/--no-server", help="Raft voter.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    log_json: Annotated[bool | None, typer.Option("--log-json", help="JSON log lines.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="HCL or JSON file.")] = None,
    cert_ttl: Annotated[
        int | None, typer.Option(help="Node certificate lifetime in seconds (renewed at half).")
    ] = None,
    seal_key_file: Annotated[
        str | None, typer.Option(help="Where a single server keeps its unseal share.")
    ] = None,
) -> None:
    """Run a node. With no flags: bootstrap a single-node cluster and serve."""
    flags: dict[str, Any] = {
        "data_dir": data_dir,
        "name": name,
        "bind": bind,
        "advertise": advertise,
        "datacenter": datacenter,
        "http_port": http_port,
        "rpc_port": rpc_port,
        "gossip_port": gossip_port,
        "vault_port": vault_port,
        "gossip_profile": gossip_profile,
        "dead_server_grace": dead_server_grace,
        "min_quorum": min_quorum,
        "join": join or None,
        "retry_join": retry_join or None,
        "bootstrap_expect": bootstrap_expect,
        "token": token,
        "server": server,
        "log_level": log_level,
        "log_json": log_json,
        "cert_ttl": cert_ttl,
        "seal_key_file": seal_key_file,
    }
    try:
        cfg = config_mod.build(flags, config, dict(os.environ))
    except ConfigError as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    from stack import logs

    logs.configure(cfg.log_level, cfg.log_json)
    try:
        asyncio.run(_run_agent(cfg))
    except StackError as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None


async def _run_agent(cfg: config_mod.AgentConfig) -> None:
    from stack.agent import Agent

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    agent = Agent(cfg, out=out)
    await agent.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(agent.stop(transfer=True)))
    await agent.wait_stopped()


# ================================================================ status and members
@app.command()
def status(
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
    substrate: Annotated[
        bool, typer.Option("--substrate", help="Count Raft groups, rings, CAs and keys.")
    ] = False,
) -> None:
    """This node's view of the cluster."""
    if substrate:
        _substrate(addr, token, as_json)
        return
    st = _call(addr, token, "GET", "/v1/status")
    if as_json:
        _print_json(st)
        return
    t = Table(show_header=False, box=None)
    for key in (
        "name",
        "id",
        "cluster_id",
        "datacenter",
        "role",
        "leader_name",
        "term",
        "commit_index",
        "applied_index",
        "snapshot_index",
        "sealed",
    ):
        t.add_row(key.replace("_", " "), str(st.get(key, "")))
    seal = st.get("seal") or {}
    if seal:
        held = f"{seal.get('shares_held', 0)} of {seal.get('shares_needed', 0)} needed"
        t.add_row("seal", f"epoch {seal.get('epoch', 0)}, shares {held}")
        if seal.get("reason"):
            t.add_row("sealed because", str(seal["reason"]))
    console.print(t)
    _members_table(st["members"])


def _members_table(members: list[dict[str, Any]]) -> None:
    t = Table("name", "id", "address", "dc", "role", "ring", "raft", "leader", "match", "status")
    for m in members:
        t.add_row(
            m["name"],
            m["id"],
            m["address"],
            m["datacenter"],
            m.get("role", ""),
            m.get("ring", ""),
            m["raft"],
            "*" if m["leader"] else "",
            str(m["match_index"] or ""),
            m["status"],
        )
    console.print(t)


def _substrate(addr: str, token: str, as_json: bool) -> None:
    data = _call(addr, token, "GET", "/v1/sys/substrate")
    if as_json:
        _print_json(data)
        return
    c, ref = data["counts"], data["hashistack"]
    t = Table("", "stack (asked every live member)", f"HashiStack ({ref['topology']})")
    t.add_row("Raft groups", str(c["raft_groups"]), str(ref["raft_groups"]))
    t.add_row("gossip rings", str(c["gossip_rings"]), str(ref["gossip_rings"]))
    roots = len(c["root_fingerprints"])
    t.add_row("CAs", f"{c['cas']} ({roots} root{'s' if roots != 1 else ''})", str(ref["cas"]))
    t.add_row("gossip keys", str(c["gossip_keys"]), str(ref["gossip_keys"]))
    console.print(t)
    console.print(f"members asked: {c['members_asked']}")
    for u in data["unreachable"]:
        console.print(f"[yellow]unreachable:[/yellow] {u['name']} ({u['error']})")


@app.command()
def members(addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """Cluster members."""
    data = _call(addr, token, "GET", "/v1/members")
    if as_json:
        _print_json(data)
    else:
        _members_table(data)


@app.command()
def leave(addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "") -> None:
    """Remove this server from the voters, then stop it."""
    data = _call(addr, token, "POST", "/v1/operator/leave")
    console.print(f"left the cluster at index {data['index']}")


@raft_app.command("list-peers")
def list_peers(
    addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Raft voters and learners."""
    data = _call(addr, token, "GET", "/v1/operator/raft/peers")
    if as_json:
        _print_json(data)
    else:
        _members_table(data)


@raft_app.command("remove-peer")
def remove_peer(peer: str, addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "") -> None:
    """Remove a server (by id or name) from the Raft configuration."""
    data = _call(
        addr, token, "POST", "/v1/operator/raft/remove-peer", json.dumps({"id": peer}).encode()
    )
    console.print(f"removed {peer} at index {data['index']}")


@raft_app.command("transfer-leader")
def transfer_leader(
    to: Annotated[str | None, typer.Argument()] = None,
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
) -> None:
    """Hand leadership to another voter (the most caught-up one by default)."""
    data = _call(
        addr,
        token,
        "POST",
        "/v1/operator/raft/transfer-leader",
        json.dumps({"to": to} if to else {}).encode(),
    )
    console.print(f"leader is now {data['leader']}")


# ================================================================ kv
@kv_app.command("get")
def kv_get(
    key: str, addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", stale: bool = False
) -> None:
    """Print a value."""
    raw = _call(addr, token, "GET", f"/v1/kv/{key}" + ("?stale" if stale else ""))
    sys.stdout.buffer.write(raw if isinstance(raw, bytes) else json.dumps(raw).encode())
    sys.stdout.write("\n")


@kv_app.command("put")
def kv_put(
    key: str,
    value: str,
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    cas: Annotated[int | None, typer.Option(help="Only if at this index.")] = None,
) -> None:
    """Set a value."""
    q = f"?cas={cas}" if cas is not None else ""
    data = _call(addr, token, "PUT", f"/v1/kv/{key}{q}", value.encode())
    console.print(f"ok, index {data['index']}")


@kv_app.command("delete")
def kv_delete(
    key: str, addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", recurse: bool = False
) -> None:
    """Delete a key (or every key under a prefix with --recurse)."""
    data = _call(addr, token, "DELETE", f"/v1/kv/{key}" + ("?recurse" if recurse else ""))
    console.print(f"ok, index {data['index']}")


# ================================================================ CA, tokens, seal
@ca_app.command("root")
def ca_root(addr: AddrOpt = DEFAULT_ADDR) -> None:
    """Print the active root certificate (PEM)."""
    raw = _call(addr, "", "GET", "/v1/ca/root")
    sys.stdout.write(raw.decode() if isinstance(raw, bytes) else str(raw))


@ca_app.command("rotate")
def ca_rotate(addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """Make a new root, cross-signed by the old one; nodes move over as they renew."""
    data = _call(addr, token, "POST", "/v1/operator/ca/rotate")
    if as_json:
        _print_json(data)
    else:
        console.print(f"new root generation {data['generation']} is active")


@token_app.command("join")
def token_join(addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "") -> None:
    """Print the join token."""
    sys.stdout.write(_call(addr, token, "GET", "/v1/operator/token/join")["token"] + "\n")


@token_app.command("rotate-join")
def token_rotate_join(addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "") -> None:
    """Replace the join token; the old one is refused from now on."""
    sys.stdout.write(_call(addr, token, "POST", "/v1/operator/token/rotate-join")["token"] + "\n")


@operator_app.command("unseal")
def operator_unseal(
    share: Annotated[str | None, typer.Argument(help="One recovery share.")] = None,
    addr: AddrOpt = DEFAULT_ADDR,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Give a sealed server one recovery share (repeat until it unseals)."""
    if share is None:
        share = typer.prompt("recovery share", hide_input=True)
    data = _call(addr, token, "POST", "/v1/sys/unseal", json.dumps({"key": share}).encode())
    if as_json:
        _print_json(data)
    elif data["sealed"]:
        console.print(
            f"still sealed: {data['recovery_progress']} of {data['recovery_needed']} shares"
        )
    else:
        console.print("unsealed")


@operator_app.command("rotate")
def operator_rotate(addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "") -> None:
    """Add a barrier key term; new secrets are encrypted with it."""
    data = _call(addr, token, "POST", "/v1/operator/keyring/rotate")
    console.print(f"keyring term {data['term']} is active")


@keyring_app.command("list")
def keyring_list(
    addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Gossip key ids in use here, and the keyring version each member advertises."""
    data = _call(addr, token, "GET", "/v1/operator/gossip/keyring")
    if as_json:
        _print_json(data)
        return
    console.print(f"version {data['version']}, primary key {data['primary']}")
    console.print(f"installed: {', '.join(data['keys'])}")
    t = Table("member", "id", "ring", "keyring version")
    for m in data["members"]:
        t.add_row(m["name"], m["id"], m["state"], str(m["keyring_version"]))
    console.print(t)


@keyring_app.command("rotate")
def keyring_rotate(
    addr: AddrOpt = DEFAULT_ADDR, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """A new gossip key on every member: installed, then used, then the old one
    removed, each step confirmed by every live member before the next."""
    import threading

    done = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["data"] = _call(
                addr, token, "POST", "/v1/operator/gossip/keyring/rotate", b"", timeout=240
            )
        except typer.Exit as e:
            result["exit"] = e
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    quiet = Console(quiet=True)
    with (quiet if as_json else console).status("rotating the gossip keyring") as live:
        while not done.wait(0.5):
            with contextlib.suppress(typer.Exit):
                kr = _call(addr, token, "GET", "/v1/operator/gossip/keyring", timeout=5)
                live_members = [m for m in kr["members"] if m["state"] in ("alive", "suspect")]
                top = max((m["keyring_version"] for m in live_members), default=0)
                confirmed = sum(1 for m in live_members if m["keyring_version"] >= top)
                live.update(
                    f"rotating the gossip keyring: version {top} confirmed by "
                    f"{confirmed} of {len(live_members)} live members"
                )
    if "exit" in result:
        raise result["exit"]
    data = result["data"]
    if as_json:
        _print_json(data)
    else:
        console.print(
            f"gossip keyring version {data['version']}: primary key {data['primary']}, "
            f"key {data['removed']} removed from every live member"
        )


@raft_app.command("recover")
def raft_recover(
    data_dir: Annotated[Path, typer.Option(help="The stopped server's data directory.")],
    voter: Annotated[
        list[str] | None, typer.Option(help="Node id of a surviving server (repeat).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Offline: rewrite a stopped server's Raft configuration to the given voters
    (default: itself), for a cluster that lost its quorum for good."""
    from stack import identity
    from stack.agent import build_registry
    from stack.raft.recover import recover
    from stack.state.fsm import FSM

    ident = identity.load(data_dir)
    if ident is None:
        err_console.print(f"[red]error:[/red] no node in {data_dir}")
        raise typer.Exit(1)
    voters = [int(v) for v in voter] if voter else [ident.id]
    if ident.id not in voters:
        err_console.print("[red]error:[/red] this server must be one of the voters")
        raise typer.Exit(2)
    if not yes:
        typer.confirm(
            f"rewrite {data_dir} to a cluster of {len(voters)} voter(s); stop the node first",
            abort=True,
        )
    fsm = FSM(build_registry())
    try:
        res = recover(
            data_dir / "raft",
            voters,
            apply_entry=fsm.apply,
            restore=fsm.restore,
            snapshot=fsm.snapshot,
        )
    except (ValueError, OSError) as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    console.print(
        f"recovered at index {res.index}, term {res.term}, voters "
        f"{', '.join(map(str, sorted(res.voters)))} ({res.entries_replayed} entries folded in). "
        "Start the node, then unseal it with `stack operator unseal` and the recovery shares."
    )


cli_secrets.attach(app, token_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
