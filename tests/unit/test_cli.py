"""The ``batchop`` CLI: every subcommand is registered and documents itself; exit codes are stable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


# As in the operator image, which holds batchop and batchwire only: importing the local stack fails.
WITHOUT_LOCAL_STACK = (
    "import sys; sys.path.insert(0, 'operator');"
    "sys.modules['devstack'] = sys.modules['localbatch'] = None;"
    "from batchop.cli.main import main; sys.exit(main(sys.argv[1:]))"
)
ROOT = Path(__file__).resolve().parents[2]


def without_local_stack(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_LOCAL_STACK, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("argv", [("dev", "status"), ("demo",), ("emulator", "--port", "0")])
def test_local_stack_commands_name_what_is_missing_and_the_fix(argv: tuple[str, ...]) -> None:
    done = without_local_stack(*argv)
    assert done.returncode == exitcodes.UNAVAILABLE, done.stderr
    assert done.stderr.startswith(f"batchop {argv[0]}: this command needs the local stack (the devstack and "
                                  "localbatch packages)"), done.stderr
    assert "install batchop from a source checkout: pip install -e ." in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("argv", [("dev", "--help"), ("emulator", "--help"), ("run", "--help")])
def test_help_works_without_the_local_stack(argv: tuple[str, ...]) -> None:
    done = without_local_stack(*argv)
    assert done.returncode == exitcodes.OK, done.stderr
    assert f"batchop {argv[0]}" in done.stdout and len(done.stdout.splitlines()) > 3


def test_building_the_parser_loads_no_local_stack() -> None:
    """Every command module is imported to build the parser: none of them may load devstack or localbatch."""
    code = ("import sys; sys.path.insert(0, 'operator');"
            "from batchop.cli import main; main.build_parser();"
            "loaded = [m for m in sys.modules if m.split('.')[0] in ('devstack', 'localbatch')];"
            "print(loaded); assert not loaded")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_emulator_passes_its_flags_to_the_service_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["emulator", "--port", "0", "--no-such-flag"])
    assert exit_info.value.code == exitcodes.USAGE
    assert "batchop emulator: error: unrecognized arguments: --no-such-flag" in capsys.readouterr().err
