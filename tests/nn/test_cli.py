import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from eco import cli  # noqa: E402

pytestmark = pytest.mark.torch

TABLES = ["test_accuracy", "forget_accuracy", "time", "speedup", "mia_forget", "mia_test", "mia_gap", "decision_diff"]


def test_experiment_quick_writes_every_promised_file(tmp_path, capsys):
    out = tmp_path / "results"
    status = cli.main(["experiment", "--quick", "--trials", "1", "--out", str(out), "--no-progress"])
    assert status == 0
    assert "Targets" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["sizes"] == [5, 10]
    assert results["settings"]["scenarios"] == ["random", "worst-case"]
    methods = {m["method"] for m in results["measurements"]}
    assert methods == {"NR", "ECO_i", "ECO", "head-NR", "original"}
    for record in results["measurements"]:
        if record["method"] in ("ECO_i", "ECO"):
            assert record["max_decision_diff"] <= 1e-6
            assert record["path"] in ("decrement", "reserve_only")
    for stem in TABLES:
        text = (out / f"{stem}.md").read_text()
        assert "| random |" in text and "| worst-case |" in text and "**" in text and " ± " in text
    assert "Targets" in (out / "summary.md").read_text()
    for name in ("time.png", "accuracy.png", "mia.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_torch_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "_missing_modules", lambda: ["torch"])
    assert cli.main(["experiment", "--quick", "--out", str(tmp_path)]) == 2
    assert "PyTorch" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from eco import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "try:\n"
        "    cli.main(['experiment', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "--worst-case" in completed.stdout and "--quick" in completed.stdout


@pytest.mark.parametrize("arguments", [["experiment", "--sizes", "5,x"], ["experiment", "--trials", "0"],
                                       ["experiment", "--dataset", "mnist"]])
def test_bad_arguments(arguments, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(arguments)
    assert raised.value.code == 2
