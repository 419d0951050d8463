"""tests/integration's ordinary-tool tests, run against smb:// on the loopback smbd.

The test functions are the integration suite's own, imported: here ``target`` is an
smb:// mount of a fresh directory of the share (tests/smb/conftest.py); symlinks are
Minshall-French symlink files there (-o mfsymlinks, the default). Some carry the id
``[sftp]``: tests/integration marks them for its real-server target only
(``indirect``), and here that target is smb://. Not here: the tar test
(it compares the share's directory on disk, where a symlink is such a file) and the
hypothesis model test (a local root ignores chmod 0444, SMB's read-only attribute does
not).
"""

from __future__ import annotations

from tests.integration.test_semantics import (
    test_copy_within_the_mount,
    test_rename_over_an_existing_file_replaces_it,
    test_truncate_up_zero_fills_and_down_cuts,
)
from tests.integration.test_workloads import (
    test_cp_r_of_1100_files_lands_byte_for_byte,
    test_dd_with_conv_fsync_lands_every_byte,
    test_editor_save_writes_temp_fsyncs_and_renames_over,
    test_git_init_add_commit_and_fsck,
    test_two_processes_append_and_no_line_is_lost,
)

__all__ = [
    "test_copy_within_the_mount",
    "test_cp_r_of_1100_files_lands_byte_for_byte",
    "test_dd_with_conv_fsync_lands_every_byte",
    "test_editor_save_writes_temp_fsyncs_and_renames_over",
    "test_git_init_add_commit_and_fsck",
    "test_rename_over_an_existing_file_replaces_it",
    "test_truncate_up_zero_fills_and_down_cuts",
    "test_two_processes_append_and_no_line_is_lost",
]
