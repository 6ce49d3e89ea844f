import json

import numpy as np
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
    summary = (out / "summary.md").read_text()
    assert "Targets" in summary and "mean ± standard deviation over trials of the per-trial values" in summary
    assert "# ECO experiment: digits, 1 trials" in summary
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


def test_version(capsys):
    import eco

    with pytest.raises(SystemExit) as raised:
        cli.main(["--version"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.strip() == f"eco {eco.__version__}"


def test_device_is_validated(capsys, tmp_path):
    with pytest.raises(SystemExit) as raised:
        cli.main(["experiment", "--device", "gpu"])
    assert raised.value.code == 2
    assert "expected cpu, cuda, cuda:N or auto" in capsys.readouterr().err
    if not torch.cuda.is_available():
        out = tmp_path / "out"
        assert cli.main(["experiment", "--quick", "--device", "cuda", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no CUDA device" in err and "Traceback" not in err
        assert not out.exists()  # refused before any work


def test_mnist_dir_from_the_environment(monkeypatch, capsys, tmp_path):
    from eco import datasets

    missing = tmp_path / "no-such-dir"
    monkeypatch.setenv("ECO_MNIST_DIR", str(missing))
    assert cli.main(["experiment", "--dataset", "mnist", "--quick", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        datasets.load_mnist()
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    datasets.write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    datasets.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 7], dtype=np.uint8))
    monkeypatch.setenv("ECO_MNIST_DIR", str(tmp_path))
    X, y = datasets.load_mnist()
    assert X.shape == (2, 784) and y.tolist() == [3, 7]
    monkeypatch.delenv("ECO_MNIST_DIR")
    with pytest.raises(FileNotFoundError, match="ECO_MNIST_DIR"):
        datasets.load_mnist()


def test_unexpected_errors_are_one_line(monkeypatch, capsys, tmp_path):
    import eco.nn.experiment as experiment

    def broken(*args, **kwargs):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(experiment, "run_experiment", broken)
    assert cli.main(["experiment", "--quick", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "eco experiment: unexpected error: RuntimeError: something broke\n"


@pytest.mark.parametrize("arguments", [["--seed", "-1"], ["--seed", str(2**32 - 1), "--trials", "2"],
                                       ["--quick", "--seed", str(2**32 - 1)]])
def test_seeds_out_of_range_are_an_argument_error(arguments, capsys, tmp_path):
    # every trial's seed (seed + t) must be one scikit-learn's splits take:
    # refused before any work, not after the trials before it ran
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as raised:
        cli.main(["experiment", *arguments, "--out", str(out)])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "error: --seed" in err and "[0, 4294967295]" in err and "Traceback" not in err
    assert not out.exists()


def test_the_largest_seeds_pass_the_argument_check(monkeypatch, capsys, tmp_path):
    import eco.nn.experiment as experiment

    def reached(*args, **kwargs):
        raise RuntimeError(f"reached with seed {kwargs['seed']}")

    monkeypatch.setattr(experiment, "run_experiment", reached)
    assert cli.main(["experiment", "--seed", str(2**32 - 2), "--trials", "2", "--out", str(tmp_path)]) == 1
    assert "reached with seed 4294967294" in capsys.readouterr().err


def test_data_dir_is_for_mnist_only(capsys, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as raised:
        cli.main(["experiment", "--data-dir", str(tmp_path), "--out", str(out)])
    assert raised.value.code == 2
    assert "--data-dir" in capsys.readouterr().err
    assert not out.exists()
    from eco.exceptions import InvalidInputError
    from eco.nn.experiment import run_experiment

    with pytest.raises(InvalidInputError, match="data_dir"):
        run_experiment("digits", data_dir=str(tmp_path), out=str(out), progress=False)
    assert not out.exists()


def test_request_sizes_are_bounded_by_the_true_ccp_size(digits):
    from eco.exceptions import InvalidInputError
    from eco.nn.experiment.protocol import DATASETS, Trial, ccp_size
    from eco.nn.experiment.run import _plan

    X, y = digits
    setup = DATASETS["digits"]
    trial = Trial(X, y, setup, setup.training, 0, "digits", "cpu")  # the splits only, no training
    assert ccp_size(setup.n_train) == len(trial.ccp_ids) == 719  # 1,437 rows: C_CP takes the odd one
    assert ccp_size(DATASETS["mnist"].n_train) == 4000
    assert _plan("digits", 1, (718,), False, 1, None, False, "cpu", 0)["sizes"] == (718,)
    with pytest.raises(InvalidInputError, match=r"\|C_CP\| = 719"):
        _plan("digits", 1, (719,), False, 1, None, False, "cpu", 0)
    with pytest.raises(InvalidInputError, match="seed"):
        _plan("digits", 2, (5,), False, 1, None, False, "cpu", 2**32 - 1)


def test_mnist_images_that_are_not_28x28_are_refused_when_loaded(capsys, tmp_path):
    from eco import datasets
    from eco.exceptions import DataFormatError
    from eco.nn.experiment import load_dataset

    # valid IDX files, enough examples for the split, but 10x10 images
    images = np.zeros((10_000, 10, 10), dtype=np.uint8)
    datasets.write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    datasets.write_idx(tmp_path / "t10k-labels-idx1-ubyte", (np.arange(10_000) % 10).astype(np.uint8))
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte: .*28x28"):
        load_dataset("mnist", tmp_path)
    out = tmp_path / "out"
    assert cli.main(["experiment", "--dataset", "mnist", "--data-dir", str(tmp_path), "--quick", "--no-progress",
                     "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("eco experiment: error: ") and err.count("\n") == 1
    assert str(tmp_path / "t10k-images-idx3-ubyte") in err and "unexpected" not in err
    assert not out.exists()
