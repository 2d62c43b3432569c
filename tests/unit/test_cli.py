"""The ``batchop`` CLI: every subcommand is registered and documents itself; exit codes are stable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from batchop.cli import main as cli
from batchwire import exitcodes

SUBCOMMANDS = ("run", "emulator", "dev", "demo", "blob", "convert", "render", "import", "status")


def test_every_subcommand_is_registered() -> None:
    parser = cli.build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    assert set(SUBCOMMANDS) <= set(choices)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_of_each_subcommand(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == exitcodes.OK
    out = capsys.readouterr().out
    assert f"batchop {name}" in out and len(out.splitlines()) > 3


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == exitcodes.USAGE
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_matches_console_script() -> None:
    result = subprocess.run([sys.executable, "-m", "batchop", "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("batchop ")


def test_the_operator_process_never_loads_the_kubernetes_client_library() -> None:
    """batchop run keeps kopf from importing the optional client library (19 MiB it never uses)."""
    code = (
        "import sys; sys.path.insert(0, 'operator');"
        "from batchop.cli import main; main.build_parser();"  # as `batchop run` does before run() is called
        "assert 'kopf' not in sys.modules, 'building the CLI parser imported kopf';"
        "from batchop.cli.commands import run; run.skip_optional_kopf_clients();"
        "import kopf, batchop.controller.handlers, batchop.admission.webhook, batchop.controller.runtime;"
        "loaded = [m for m in sys.modules if m.startswith('kubernetes') and sys.modules[m] is not None];"
        "print(loaded); assert not loaded"
    )
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
