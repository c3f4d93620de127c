"""What every `stack` client command shares: the console, the common options, and
one HTTP call to a node's native API (token from --token, STACK_TOKEN or the local
root-token file; HTTPS verified against the cluster CA)."""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer
from rich.console import Console

from stack import config as config_mod

console = Console()
err_console = Console(stderr=True)

AddrOpt = Annotated[str, typer.Option("--addr", envvar="STACK_ADDR", help="Node API address.")]
TokenOpt = Annotated[str, typer.Option("--token", envvar="STACK_TOKEN", help="API token.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DEFAULT_ADDR = "http://127.0.0.1:7480"


def _token(token: str) -> str:
    if token:
        return token
    path = config_mod.default_config_dir() / "root-token"
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _tls_context(addr: str) -> ssl.SSLContext | None:
    """HTTPS verifies against STACK_CACERT, or the roots the local node saved."""
    if not addr.startswith("https:"):
        return None
    cafile = os.environ.get("STACK_CACERT") or str(config_mod.default_config_dir() / "ca.crt")
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        err_console.print(f"[red]error:[/red] cannot load CA bundle {cafile}: {e}")
        raise typer.Exit(1) from None


def _call(
    addr: str,
    token: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    timeout: float = 30.0,
) -> Any:
    req = urllib.request.Request(addr.rstrip("/") + path, data=body, method=method)
    tok = _token(token)
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_tls_context(addr)) as resp:
            raw = resp.read()
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        try:
            msg = "; ".join(json.loads(e.read())["errors"])
        except (ValueError, KeyError, TypeError):
            msg = e.reason
        err_console.print(f"[red]error ({e.code}):[/red] {msg}")
        raise typer.Exit(1) from None
    except OSError as e:
        err_console.print(f"[red]error:[/red] cannot reach {addr}: {e}")
        raise typer.Exit(1) from None
    if ctype.startswith("application/json"):
        return json.loads(raw)
    return raw


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
