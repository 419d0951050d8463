"""The loopback Samba server for the smb:// tests (``smbd``), and ``target``: an smb://
mount of a fresh directory of its share, for the integration tests run here too.

smbd fails (never skips) when it is missing or does not start: CI must not pass without it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.integration.integration_support import Target
from tests.support.smbd import LoopbackSmbd, smbd

if TYPE_CHECKING:
    from tests.conftest import MountFactory

__all__ = ["smbd", "target"]

_numbers = itertools.count(1)


@pytest.fixture
def target(mount: MountFactory, smbd: LoopbackSmbd) -> Iterator[Target]:
    path = smbd.root / f"i{os.getpid()}-{next(_numbers)}"
    path.mkdir()
    mounted = mount(smbd.url(path.name), smbd.mount_options())
    yield Target("smb", mounted.path, mounted, path)
    if mounted.mounted():
        subprocess.run(["fusermount3", "-u", str(mounted.path)], timeout=30, check=False)
    mounted.wait_exit()
    shutil.rmtree(path, ignore_errors=True)
