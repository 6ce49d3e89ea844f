"""The ``eco`` command line.

``eco experiment`` rebuilds the paper's Tables 2 and 3 (see
:mod:`eco.nn.experiment`). torch is imported only when a subcommand needs it,
so ``eco --help`` works without it; a subcommand that needs it and cannot
find it prints how to install it and exits with status 2. Errors are one
line on stderr (exit status 1), never a traceback.
"""

import argparse
import importlib.util
import os
import re
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

_DEFAULT_SIZES = "5,10,20,30,40,50"
# Trial t runs with seed + t, and scikit-learn's splits take seeds in
# [0, 2**32 - 1] (eco.nn.experiment.run.MAX_SEED; not imported: no torch here).
_MAX_SEED = 2 ** 32 - 1
# The trials run_experiment defaults to (with --quick), to check their seeds.
_DEFAULT_TRIALS, _QUICK_TRIALS = 10, 2


def _sizes(text):
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _device(text):
    # The form is checked here; whether CUDA is there is checked once torch is imported.
    if text in ("cpu", "auto") or re.fullmatch(r"cuda(:\d+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``eco``."""
    from eco import __version__

    parser = argparse.ArgumentParser(
        prog="eco",
        description="Exact machine unlearning with Cauwenberghs-Poggio SVM heads.",
    )
    parser.add_argument("--version", action="version", version=f"eco {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    experiment = commands.add_parser(
        "experiment",
        help="rebuild the paper's Tables 2 and 3 (NR, ECO_i, ECO, head-NR); needs torch",
        description=(
            "Compare NR (naive retraining of the network), ECO_i, ECO and head-NR on "
            "unlearning requests of several sizes, drawn at random from C_CP and, unless "
            "--no-worst-case, only from support vectors. Phi is trained on one half of the "
            "training set (not deletable), the CP head on the other (C_CP). Writes "
            "results.json, one Markdown table per metric, summary.md and PNG plots."
        ),
    )
    experiment.add_argument("--dataset", choices=("digits", "mnist"), default="digits",
                            help="digits (default): embedded 8x8 digits; mnist: the 10,000-image MNIST test set "
                                 "(from --data-dir or ECO_MNIST_DIR)")
    experiment.add_argument("--data-dir", default=None,
                            help="folder with t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) (mnist "
                                 "only; default: the ECO_MNIST_DIR environment variable)")
    experiment.add_argument("--trials", type=_positive_int, default=None,
                            help="independent trials (default 10; 2 with --quick)")
    experiment.add_argument("--sizes", type=_sizes, default=None,
                            help=f"comma-separated request sizes |D_f| (default {_DEFAULT_SIZES}; 5,10 with --quick)")
    experiment.add_argument("--worst-case", action=argparse.BooleanOptionalAction, default=True,
                            help="also run requests drawn only from support vectors, as extra rows (default: on)")
    experiment.add_argument("--out", default="results", help="output folder (default: results)")
    experiment.add_argument("--seed", type=int, default=0,
                            help=f"base seed; trial t uses seed + t, within [0, {_MAX_SEED}] (default: 0)")
    experiment.add_argument("--quick", action="store_true",
                            help="smoke run: 2 trials, sizes 5,10, few epochs")
    experiment.add_argument("--epochs", type=_positive_int, default=None,
                            help="epochs of the network recipe (Phi and NR); default per dataset")
    experiment.add_argument("--threads", type=_positive_int, default=None,
                            help="torch threads (default 1: small networks, robust on busy machines)")
    experiment.add_argument("--device", type=_device, default="cpu",
                            help="where the networks run: cpu (default), cuda, cuda:N or auto")
    experiment.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


#: What ``eco experiment`` imports beyond eco's own dependencies (the "torch" extra).
_EXPERIMENT_NEEDS = ("torch", "tqdm", "matplotlib")


def _missing_modules(names=_EXPERIMENT_NEEDS):
    return [name for name in names if importlib.util.find_spec(name) is None]


def _check_arguments(args, parser):
    """Argument errors that involve several options (exit status 2, nothing written)."""
    trials = args.trials if args.trials is not None else (_QUICK_TRIALS if args.quick else _DEFAULT_TRIALS)
    if args.seed < 0 or args.seed + trials - 1 > _MAX_SEED:
        parser.error(f"--seed: the trials' seeds {args.seed} .. {args.seed + trials - 1} (seed + trial) must lie "
                     f"in [0, {_MAX_SEED}]")
    if args.data_dir is not None and args.dataset != "mnist":
        parser.error(f"--data-dir is the folder of the MNIST files; --dataset {args.dataset} takes none "
                     "(add --dataset mnist?)")


def _run_experiment(args, parser):
    _check_arguments(args, parser)
    if args.dataset == "mnist" and args.data_dir is None:
        args.data_dir = os.environ.get("ECO_MNIST_DIR") or None
        if args.data_dir is None:
            parser.error("--dataset mnist needs --data-dir DIR or the ECO_MNIST_DIR environment variable "
                         "(the folder of the IDX files)")
    missing = _missing_modules()
    if missing:
        what = "PyTorch" if missing == ["torch"] else ", ".join(missing)
        print(
            f"eco experiment needs {what}, which is not installed.\n"
            "Install it with:  pip install 'eco[torch]'   (or: pip install torch tqdm matplotlib)",
            file=sys.stderr,
        )
        return 2
    from eco.exceptions import EcoError
    from eco.nn.experiment import run_experiment, targets_markdown
    from eco.nn.features import resolve_device

    try:
        resolve_device(args.device)  # a clean message, before any work, when CUDA is absent
        results = run_experiment(
            args.dataset,
            data_dir=args.data_dir,
            trials=args.trials,
            sizes=args.sizes,
            worst_case=args.worst_case,
            out=args.out,
            seed=args.seed,
            quick=args.quick,
            epochs=args.epochs,
            progress=not args.no_progress,
            threads=args.threads,
            device=args.device,
        )
    except (EcoError, OSError) as error:
        print(f"eco experiment: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("eco experiment: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line, never a traceback; the type says where to look
        print(f"eco experiment: unexpected error: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return 1
    print(targets_markdown(results["targets"]))
    print(f"wrote {args.out}/ (results.json, summary.md, one table per metric, plots) "
          f"in {results['total_wall_time_s']:.1f} s")
    return 0


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``eco`` console script.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if args.command == "experiment":
        return _run_experiment(args, parser)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
