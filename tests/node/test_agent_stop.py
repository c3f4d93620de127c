"""Stopping is idempotent: two SIGTERMs (or a signal racing `stack leave`) stop once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from cluster import allocate_addresses

from stack.agent import Agent
from stack.config import AgentConfig


@pytest.mark.timeout(60)
async def test_concurrent_stops_stop_once(tmp_path: Path) -> None:
    [addr] = allocate_addresses(1)
    cfg = dataclasses.replace(
        AgentConfig(), data_dir=tmp_path / "d", bind=addr, http_port=17480, rpc_port=17481,
        gossip_port=17482, vault_port=17483,
        config_dir=tmp_path / "cfg",
    )  # fmt: skip
    printed: list[str] = []
    agent = Agent(cfg, out=printed.append)
    await agent.start()
    try:
        assert any(line.startswith("root token: ") for line in printed)
        results = await asyncio.gather(agent.stop(), agent.stop(), agent.stop(),
                                       return_exceptions=True)  # fmt: skip
        assert results == [None, None, None]
        await asyncio.wait_for(agent.wait_stopped(), 5)
    finally:
        await agent.stop()
