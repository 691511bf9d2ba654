import subprocess
import sys
from pathlib import Path

import pytest

from dataengine.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["demo-corpus", "fit", "run", "inspect", "tokenizers"]


def test_every_subcommand_has_help_with_an_example():
    exe = Path(sys.executable).with_name("dataengine")
    top = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in COMMANDS:
        assert cmd in top
        out = subprocess.run([str(exe), cmd, "--help"], capture_output=True, text=True, check=True).stdout
        assert f"dataengine {cmd}" in out.split("example:")[1], f"{cmd} --help lacks an example"


def test_run_requires_output():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "pipelines/demo.yaml"])


def test_bad_recipe_stops_before_work_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\nsources: [{name: a, path: .}]\ntokenizers: {text: {family: bpe}}\nsed: 3\n")
    out = tmp_path / "out"
    assert main(["run", str(bad), "--output", str(out)]) == 2
    assert "did you mean 'seed'" in capsys.readouterr().err
    assert not out.exists()


def test_missing_input_folder_is_reported(tmp_path, capsys):
    code = main(["run", str(ROOT / "pipelines" / "demo.yaml"), "--input", str(tmp_path / "nope"),
                 "--tokenizers", str(tmp_path / "toks"), "--output", str(tmp_path / "out")])
    assert code == 2 and "not found" in capsys.readouterr().err


def test_inspect_of_a_non_output_folder_says_what_to_pass(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "--output folder" in capsys.readouterr().err
