"""Dropped connections lose no byte: the core reconnects and replays (DESIGN §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.checklogs import RECONNECTS

from .conftest import Rig
from .scenarios import concurrent_writers, copy_with_cuts

pytestmark = pytest.mark.expect_log(*RECONNECTS)


def test_copy_of_128_mib_survives_every_connection_cut_three_times(
    rig: Rig, tmp_path: Path
) -> None:
    outcome = copy_with_cuts(rig.mnt, rig.server, tmp_path, rig.sshd.drop_connections)
    assert outcome.exit_codes == [0], outcome
    assert "cut 3 times" in outcome.notes[0], outcome
    assert outcome.exact, outcome


def test_concurrent_writers_with_a_cut_land_every_byte(rig: Rig) -> None:
    outcome = concurrent_writers(rig.mnt, rig.server, rig.proxy.cut_all)
    assert outcome.exit_codes == [0] * 12, outcome
    assert outcome.exact, outcome


def test_concurrent_writers_land_every_byte(rig: Rig) -> None:
    outcome = concurrent_writers(rig.mnt, rig.server)
    assert outcome.exit_codes == [0] * 12, outcome
    assert outcome.exact, outcome
