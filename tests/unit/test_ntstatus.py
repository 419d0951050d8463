"""NtStatus carries Microsoft's names and values, checked against ntstatus.h text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rxfs.rdbss import NtStatus, nt_success
from rxfs.rdbss.ntstatus import Severity, nt_error, nt_information, nt_warning

NTSTATUS_H = Path(__file__).parent / "data" / "ntstatus.h.txt"

# Wine writes ((NTSTATUS) 0xC0000001), Microsoft and mingw-w64 ((NTSTATUS)0xC0000001L).
DEFINE = re.compile(r"^#define\s+(STATUS_\w+)\s+\(\(NTSTATUS\)\s*(0x[0-9A-Fa-f]{8})L?\)", re.M)


def header_values() -> dict[str, int]:
    found = {name: int(value, 16) for name, value in DEFINE.findall(NTSTATUS_H.read_text())}
    assert len(found) >= len(NtStatus), "the reference header lost lines"
    return found


def test_every_ntstatus_member_has_microsofts_name_and_value() -> None:
    reference = header_values()
    mismatched = {
        member.name: (f"0x{member.value:08X}", reference.get(member.name))
        for member in NtStatus
        if reference.get(member.name) != member.value
    }
    assert mismatched == {}


def test_ntstatus_values_are_unique() -> None:
    """No member is an alias of another: every value names one status."""
    assert len({m.value for m in NtStatus}) == len(NtStatus.__members__)


def test_severity_codes_match_the_header() -> None:
    reference = header_values()
    for severity in Severity:
        assert reference[f"STATUS_SEVERITY_{severity.name}"] == severity.value


@pytest.mark.parametrize(
    ("status", "severity", "success"),
    [
        (NtStatus.STATUS_SUCCESS, Severity.SUCCESS, True),
        (NtStatus.STATUS_PENDING, Severity.SUCCESS, True),
        (NtStatus.STATUS_BUFFER_OVERFLOW, Severity.WARNING, False),
        (NtStatus.STATUS_NO_MORE_FILES, Severity.WARNING, False),
        (NtStatus.STATUS_UNSUCCESSFUL, Severity.ERROR, False),
        (NtStatus.STATUS_DISK_FULL, Severity.ERROR, False),
        (NtStatus.STATUS_HOST_UNREACHABLE, Severity.ERROR, False),
    ],
)
def test_severity_and_nt_success(status: NtStatus, severity: Severity, success: bool) -> None:
    assert status.severity is severity
    assert nt_success(status) is success
    # NT_SUCCESS is "signed value >= 0": the definition the helpers must agree with.
    assert (status.signed >= 0) is success
    assert nt_error(status) is (severity is Severity.ERROR)
    assert nt_warning(status) is (severity is Severity.WARNING)
    assert nt_information(status) is False


def test_informational_values_are_successes() -> None:
    status_object_name_exists = 0x40000000  # ntstatus.h: an informational status
    assert nt_success(status_object_name_exists)
    assert nt_information(status_object_name_exists)
    assert not nt_warning(status_object_name_exists)
    assert not nt_error(status_object_name_exists)


def test_signed_value_is_what_c_compares_against_zero() -> None:
    assert NtStatus.STATUS_UNSUCCESSFUL.signed == -0x3FFFFFFF
    assert NtStatus.STATUS_BUFFER_OVERFLOW.signed == -0x7FFFFFFB
    assert NtStatus.STATUS_PENDING.signed == 0x103


def test_str_names_the_status_and_its_hex_value() -> None:
    assert str(NtStatus.STATUS_FILE_CLOSED) == "STATUS_FILE_CLOSED (0xC0000128)"
