"""The console script: verbs are listed, errors are one line."""

import subprocess
import sys

import pytest

from maskkit.cli import DATA_VERBS, VERBS, main


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for verb in list(VERBS) + ["data"]:
        assert verb in out


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_each_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert "usage: maskkit " + verb in capsys.readouterr().out


@pytest.mark.parametrize("verb", sorted(DATA_VERBS))
def test_each_data_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", verb, "--help"])
    assert e.value.code == 0


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "maskkit", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("maskkit ")
