from typer.testing import CliRunner

from geostrata.cli import app


def test_help_lists_command_groups():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("data", "kb", "demo"):
        assert group in result.output
