"""`--help` at 80 columns: the settings in panels, every flag, env var name and default whole, nothing cut."""

import re

import pytest
from typer.testing import CliRunner

from slmserve.cli import app as cli
from slmserve.cli.chat import SERVER_ONLY
from slmserve.cli.options import panel, shown
from slmserve.settings import Settings


def help_at_80(command: str) -> str:
    result = CliRunner().invoke(cli, [command, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def joined(output: str) -> str:
    """The help on one line, box borders dropped: a word that 80 columns cut or folded no longer reads whole."""
    return re.sub(r"\s+", " ", " ".join(line.strip().strip("│╭╮╰╯").strip() for line in output.splitlines()))


@pytest.mark.parametrize("command", ["serve", "generate", "chat", "cluster", "explore"])
def test_help_at_80_columns_keeps_every_flag_env_var_and_default_whole(command):
    output = help_at_80(command)
    assert "…" not in output  # rich's mark for a cut cell
    assert all(len(line) <= 80 for line in output.splitlines())
    text = joined(output)
    listed = [n for n in Settings.model_fields if not (command in ("generate", "chat") and n in SERVER_ONLY)]
    for name in listed:
        assert f"--{name.replace('_', '-')} " in text, name
        default = re.sub(r"\s+", " ", shown(name))
        assert f"(env SLMSERVE_{name.upper()}; default: {default})" in text, name


def test_serve_help_groups_the_settings_in_panels_and_is_far_shorter():
    output = help_at_80("serve")
    titles = re.findall(r"╭─ (.+?) ─", output)
    assert titles[:4] == ["Options", "Model", "Engine", "HTTP server"]
    assert "Settings" not in titles  # the one long panel it was
    # 363 lines in one panel before (324 before the four stored-responses settings); 194 in panels.
    assert len(output.splitlines()) < 250


def test_a_setting_no_panel_names_goes_in_the_lastpanel():
    assert panel("max_running") == "Engine"
    assert panel("a_setting_added_later") == "Other settings"
