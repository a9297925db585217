"""Generated code: the committed output matches the sources; drift is detected."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.platform.events import codegen

REPO_ROOT = codegen.REPO_ROOT


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.platform.events.codegen", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of proto/ (sources and committed output) to change freely."""
    shutil.copytree(
        REPO_ROOT / "proto",
        tmp_path / "proto",
        ignore=shutil.ignore_patterns("__pycache__", ".*"),
    )
    return tmp_path


def test_check_passes_on_the_committed_output() -> None:
    result = _run_cli("check")
    assert result.returncode == 0, result.stderr
    assert codegen.check(REPO_ROOT).clean


def test_every_proto_has_committed_python_and_stubs() -> None:
    for source in codegen.proto_sources(REPO_ROOT):
        stem = REPO_ROOT / "proto" / "gen" / source.with_suffix("")
        assert stem.with_name(stem.name + "_pb2.py").is_file()
        assert stem.with_name(stem.name + "_pb2.pyi").is_file()


def test_check_fails_when_a_proto_changes_without_regeneration(repo_copy: Path) -> None:
    assert codegen.check(repo_copy).clean
    source = repo_copy / "proto/ehr/consent/v1/consent.proto"
    source.write_text(
        source.read_text().replace(
            "  GrantScope scope = 3;\n}", "  GrantScope scope = 3;\n  string note = 4;\n}"
        )
    )

    drift = codegen.check(repo_copy)
    assert drift.changed == ("ehr/consent/v1/consent_pb2.py", "ehr/consent/v1/consent_pb2.pyi")
    assert not drift.missing and not drift.extra

    result = _run_cli("check", "--root", str(repo_copy))
    assert result.returncode == 1
    assert "ehr/consent/v1/consent_pb2.py" in result.stderr
    assert "make proto" in result.stderr

    codegen.generate(repo_copy)
    assert codegen.check(repo_copy).clean
    assert "note" in (repo_copy / "proto/gen/ehr/consent/v1/consent_pb2.pyi").read_text()


def test_check_reports_new_and_stale_files(repo_copy: Path) -> None:
    extra_source = repo_copy / "proto/ehr/consent/v2/consent.proto"
    extra_source.parent.mkdir(parents=True)
    extra_source.write_text('syntax = "proto3";\npackage ehr.consent.v2;\nmessage Probe {}\n')
    stale = repo_copy / "proto/gen/ehr/records/v1/old_pb2.py"
    stale.write_text("# left over\n")

    drift = codegen.check(repo_copy)
    assert "ehr/consent/v2/consent_pb2.py" in drift.missing
    assert drift.extra == ("ehr/records/v1/old_pb2.py",)

    codegen.generate(repo_copy)
    assert not stale.exists()
    assert (repo_copy / "proto/gen/ehr/consent/v2/__init__.py").is_file()
    assert codegen.check(repo_copy).clean


def test_hand_edited_output_is_drift(repo_copy: Path) -> None:
    generated = repo_copy / "proto/gen/ehr/envelope/v1/envelope_pb2.pyi"
    generated.write_text(generated.read_text() + "\n# edited by hand\n")
    assert codegen.check(repo_copy).changed == ("ehr/envelope/v1/envelope_pb2.pyi",)


def test_a_broken_proto_fails_with_the_compiler_message(repo_copy: Path) -> None:
    (repo_copy / "proto/ehr/ledger/v1/ledger.proto").write_text("this is not protobuf\n")
    result = _run_cli("check", "--root", str(repo_copy))
    assert result.returncode == 2
    assert "protoc failed" in result.stderr
    assert "ledger.proto" in result.stderr
