"""Shared bits of the integration tests."""

from __future__ import annotations

from typing import Any

FAST: dict[str, Any] = {
    "lease_s": 1.0,
    "heartbeat_s": 0.1,
    "stall_check_s": 0.1,
    "idle_wait_s": 0.05,
    "handle_signals": False,
}
"""Worker settings that make leases, heartbeats and stall checks fast enough to test."""
