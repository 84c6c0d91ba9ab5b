"""Fixtures for the gql end-to-end suite: a fresh `fanwire serve` per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import Server, fanwire_bin


@pytest.fixture
def server() -> Iterator[Server]:
    """A fresh fanwire server for one test, stopped afterwards."""
    srv = Server(fanwire_bin())
    try:
        yield srv
    finally:
        srv.stop()
