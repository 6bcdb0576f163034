"""A new user's mistakes on the command line, each answered in one line with exit status 2
(nothing stored), or said in one ``wdlab: warning:`` line: flag abbreviations, ``--keep`` on
``run``, warm-up schedules out of range."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from wdlab.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a usage error prints (exit status 2)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# -- flags are spelt out ------------------------------------------------------------------------


def test_no_parser_takes_an_abbreviation():
    parser = build_parser()
    assert parser.allow_abbrev is False
    assert all(p.allow_abbrev is False for p in _subparsers(parser).values())


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (["sweep", "--data", "wine", "--seed", "5"], "--seeds"),
        (["sweep", "--data", "wine", "--clip-grad", "1"], "--clip-grad-norm"),
        (["sweep", "--data", "wine", "--epoch", "2"], "--epochs"),
        (["run", "--data", "wine", "--epoch", "2"], "--epochs"),
        (["search", "--data", "wine", "--trial", "2"], "--trials"),
    ],
)
def test_an_abbreviated_flag_is_refused_naming_the_flag_meant(argv, meant, capsys):
    """argparse took a prefix of a flag for the flag (``--seed 5`` trained seeds 0..4)."""
    err = usage_error(argv, capsys)
    assert f"unrecognized arguments: {argv[3]}" in err and f"(did you mean {meant}?)" in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["transfer", "--wd", "0.1", "--lr", "-1e-3", "--n", "10", "--batch-size", "1"], "> 0"),
        (["transfer", "--wd", "-1e-3", "--lr", "0.1", "--n", "10", "--batch-size", "1"], "> 0"),
        (["run", "--data", "wine", "--lr", "-1e-3,0.1"], "learning rates must be numbers > 0"),
        (["sweep", "--data", "wine", "--wd", "-.5"], "weight decay"),
    ],
)
def test_a_negative_number_is_read_as_a_value_and_refused_for_what_it_is(argv, said, capsys):
    """A new-user trial: ``--lr -1e-3`` said "argument --lr: expected one argument" (argparse
    took "-1e-3" for a flag), not that a learning rate must be positive."""
    try:
        code = main(argv)  # refused after parsing: main returns 2
    except SystemExit as stop:  # refused by the flag's type: argparse exits 2
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "expected one argument" not in err and said in err, err


def test_transfers_batch_size_0_says_what_a_full_batch_is_there(capsys):
    """A new-user trial: ``run --batch-size 0`` is a full batch; ``transfer``'s said only
    "must be > 0"."""
    err = usage_error(
        ["transfer", "--wd", "1", "--lr", "1", "--n", "9", "--batch-size", "0"], capsys
    )
    assert "must be > 0, got 0 (a full batch: give B ≥ N)" in err
    argv = ["transfer", "--wd", "1", "--lr", "1", "--n", "9", "--batch-size", "3"]
    err = usage_error([*argv, "--to-batch-size", "0e0"], capsys)  # a checker: 0e0, 00, -0 too
    assert "got 0e0 (a full batch: give B' ≥ N')" in err


def test_search_seed_is_the_sampler_seed_and_seeds_the_training_seeds():
    args = build_parser().parse_args(["search", "--seed", "7", "--seeds", "2"])
    assert (args.seed, args.seeds) == (7, "2")


def test_an_abbreviation_is_refused_before_torch_is_imported():
    code = (
        "import sys\nfrom wdlab.cli import main\n"
        "try:\n    main(['sweep', '--data', 'wine', '--seed', '5'])\n"
        "except SystemExit as exc:\n    print(exc.code, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False"], out.stderr


# -- run keeps no trained weights ---------------------------------------------------------------

RUN = ["run", "--data", "wine", "--model", "linear", "--epochs", "1"]


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command prints (exit status 2)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("keep", ["all", "best"])
def test_run_refuses_keep_and_points_to_sweep(tmp_path, capsys, keep):
    """run trains in a temporary study: --keep all kept nothing, silently."""
    out = tmp_path / "run-keep"
    err = one_line_error([*RUN, "--keep", keep, "--out", str(out)], capsys)
    assert f"--keep {keep}: wdlab run keeps no trained weights" in err
    assert f"wdlab sweep --out DIR --keep {keep}" in err
    assert not out.exists()


def test_run_refuses_a_checkpoint_and_points_to_sweep(tmp_path, capsys):
    """A new-user trial: run --checkpoint 1 wrote training state into a temporary study that
    nothing can resume from, silently, while --keep all was refused for the same reason."""
    out = tmp_path / "run-checkpoint"
    err = one_line_error([*RUN, "--checkpoint", "1", "--out", str(out)], capsys)
    assert err == (
        "wdlab run: error: --checkpoint 1: wdlab run resumes nothing (it trains in a temporary "
        "study); to resume: wdlab sweep --out DIR --checkpoint 1\n"
    )
    assert not out.exists()
    for bad in ("0", "foo"):  # not a cadence: said by its check, not pointed to a sweep
        err = one_line_error([*RUN, "--checkpoint", bad, "--out", str(out)], capsys)
        assert "expected auto, off or a number of epochs >= 1" in err and "sweep" not in err


def wdlab(argv: list[str], cwd: object) -> subprocess.CompletedProcess[str]:
    """The command in a fresh interpreter, as a user runs it (its warnings as they print)."""
    cmd = [sys.executable, "-m", "wdlab.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)


def test_run_says_a_files_keep_and_checkpoint_do_nothing(tmp_path):
    (tmp_path / "exp.toml").write_text('[train]\nkeep = "all"\ncheckpoint = 2\n')
    done = wdlab(["run", "exp.toml", *RUN[1:], "--out", "o"], tmp_path)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "warning" in line]
    assert said == [
        "wdlab: warning: exp.toml: train.keep = 'all': wdlab run keeps no trained weights (it "
        "trains in a temporary study); to keep them: wdlab sweep --out DIR --keep all",
        "wdlab: warning: exp.toml: train.checkpoint = 2: wdlab run resumes nothing (it trains in "
        "a temporary study); to resume: wdlab sweep --out DIR --checkpoint 2",
    ]
    # --keep none and --checkpoint off say what run does: no warning
    flags = ["--keep", "none", "--checkpoint", "off"]
    done = wdlab(["run", "exp.toml", *RUN[1:], *flags, "--out", "p"], tmp_path)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr


def test_another_name_for_an_existing_study_says_the_study_keeps_its_own(tmp_path):
    sweep = ["sweep", *RUN[1:], "--wd", "0", "--seeds", "1", "--out", "s"]
    assert wdlab([*sweep, "--name", "first"], tmp_path).returncode == 0
    done = wdlab([*sweep, "--name", "second", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "warning" in line]
    assert said == [
        "wdlab: warning: name 'second' is not used: the study in s keeps the name 'first' it "
        "was made with"
    ]
    assert json.loads(done.stdout)["name"] == "first"
    again = wdlab(sweep, tmp_path)  # no --name: the folder's study, whatever its name
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr


@pytest.mark.parametrize(
    "data, select, recorded",
    [("d2l", "acc", "regression task record loss, rmse, r2"),
     ("wine", "r2", "multiclass task record loss, acc")],
)  # fmt: skip
def test_a_select_the_runs_do_not_record_is_refused_before_training(
    tmp_path, capsys, data, select, recorded
):
    """Before: the sweep trained and stored every run, then said "select='acc': no run
    recorded it", and show, report and a rerun of that study failed the same way."""
    out = tmp_path / "s"
    argv = ["sweep", "--data", data, "--model", "linear", "--epochs", "1", "--select", select]
    err = one_line_error([*argv, "--out", str(out)], capsys)
    assert f"select={select!r}: the runs of this {recorded}" in err
    assert not out.exists()


# -- warm-up schedules --------------------------------------------------------------------------


@pytest.mark.parametrize("w", ["1.0", "1.5", "-0.1", "x"])
def test_a_warmup_out_of_range_says_what_w_may_be(capsys, w):
    err = one_line_error([*RUN, "--schedule", f"warmup-cosine:{w}"], capsys)
    assert f"'warmup-cosine:{w}' is not allowed: W is the warm-up: a number of steps" in err
    assert "(an integer >= 0, e.g. 500) or a fraction 0 < W < 1 of the training's steps" in err


def test_a_warmup_longer_than_the_training_is_one_warning(tmp_path):
    """wine in one full batch, 2 epochs: 2 steps, so a warm-up of 500 never reaches the lr."""
    argv = [*RUN[:-1], "2", "--schedule", "warmup-cosine:500", "--out", "o"]
    done = wdlab(argv, tmp_path)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "warning" in line]
    assert said == [
        "wdlab: warning: lr schedule 'warmup-cosine:500': a warm-up of 500 steps in a training "
        "of 2: the lr never reaches its peak; give a shorter W (or a fraction such as 0.1)"
    ]


def test_a_warmup_warning_in_python_names_the_callers_line():
    """It named ``<string>:33``, the line of a dataclass's generated ``__init__`` inside
    wdlab (a file of its own, so it was not recognised as wdlab's)."""
    import torch
    from torch import nn

    import wdlab

    X = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
    y = (X[:, 0] > 0).long()
    data = {"train": (X[:40], y[:40]), "val": (X[40:50], y[40:50]), "test": (X[50:], y[50:])}
    with pytest.warns(UserWarning, match="never reaches its peak") as said:
        wdlab.sweep(lambda seed: nn.Linear(4, 2), data, epochs=2, batch_size=16,
                    weight_decay=[0.0], schedule="warmup-cosine:100")  # fmt: skip
    assert [w.filename for w in said if "peak" in str(w.message)] == [__file__]


def test_a_warmup_shorter_than_the_training_says_nothing():
    import warnings

    from wdlab.trainer.schedules import check_schedule

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_schedule("warmup-cosine:1", 2)
        check_schedule("warmup-linear:0.5", 2)
        check_schedule("cosine", 1)
    with pytest.warns(UserWarning, match="a warm-up of 2 steps in a training of 2"):
        check_schedule("warmup-constant:2", 2)


# -- per-step schedules and steps= on a stream without len() ------------------------------------


def _stream(sized: bool):
    import torch
    from torch.utils.data import IterableDataset

    class Stream(IterableDataset):
        def __iter__(self):
            g = torch.Generator().manual_seed(0)
            for _ in range(64):
                x = torch.randn(10, generator=g)
                yield x, int(x[0] > 0)

    class Sized(Stream):
        def __len__(self):
            return 64

    return Sized() if sized else Stream()


def _splits(sized: bool) -> dict:
    import torch

    g = torch.Generator().manual_seed(1)
    X = torch.randn(32, 10, generator=g)
    y = (X[:, 0] > 0).long()
    return {"train": _stream(sized), "val": (X[:16], y[:16]), "test": (X[16:], y[16:])}


def _model(seed=0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def test_a_stream_without_len_gets_advice_that_leads_somewhere():
    """A per-step schedule said "give steps=", and steps= said "give epochs=": each now says
    what works, and neither sends the user to the other."""
    import wdlab

    kw = dict(seeds=1, batch_size=16, n_classes=2, weight_decay=0.0, epochs=2)
    with pytest.raises(ValueError) as sched:
        wdlab.sweep(_model, _splits(False), schedule="warmup-cosine:0.1", **kw)
    with pytest.raises(ValueError) as steps:
        wdlab.sweep(_model, _splits(False), steps=20, **{**kw, "epochs": None})
    for info in (sched, steps):
        assert "\n" not in str(info.value) and "give its Dataset a __len__" in str(info.value)
    assert "steps=" not in str(sched.value) and "per-epoch schedule (cosine" in str(sched.value)
    assert "schedule" not in str(
        steps.value
    ) and "train for epochs (epochs=, --epochs) instead" in str(steps.value)
    # the advice followed: a stream with a length trains with both
    r = wdlab.sweep(_model, _splits(True), schedule="warmup-cosine:0.1", steps=6,
                    **{**kw, "epochs": None})  # fmt: skip
    assert [run.status for run in r.runs] == ["done"]
    assert len(r.runs[0].curves["train_loss"]) == 2  # 4 batches an epoch: 6 steps, 2 epochs


def test_inspect_refuses_builtin_with_an_optimizer_without_weight_decay(capsys):
    """inspect said what Rprop(weight_decay=wd) does with it and exited 0; run, sweep and
    Decay.attach refuse the pairing, and so does inspect now."""
    code = main(["inspect", "linear", "--in-dim", "4", "--optimizer", "rprop", "--mode", "builtin"])
    err = capsys.readouterr().err
    assert code == 2 and "Rprop has no weight_decay of its own" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "filename, source",
    [
        ("/x/lib/python3.11/site-packages/optuna/importance/_ped_anova/evaluator.py", "optuna"),
        ("/x/lib/python3.11/site-packages/torch/functional.py", "torch"),
        ("/x/lib/python3.11/site-packages/wdlab/decay/attach.py", "wdlab"),
        ("/work/main/src/wdlab/decay/attach.py", "wdlab"),
        ("/home/me/project/model.py", "wdlab"),  # wdlab's warnings name their caller's line
        ("<stdin>", "wdlab"),
    ],
)
def test_a_warning_names_who_raised_it(filename, source):
    """A warning on the command line says which installed package raised it: a notice from
    Optuna's importance is not wdlab's."""
    from wdlab.cli import _format_warning, warning_source

    assert warning_source(filename) == source
    line = _format_warning("careful\nnow", UserWarning, filename, 1)
    said = "" if source == "wdlab" else f"[{source}] "
    assert line == f"wdlab: warning: {said}careful; now\n"


def test_main_leaves_python_s_warning_format_as_it_was(capsys):
    """``main()`` in a notebook: its one-line format is for the command's own warnings only."""
    import warnings

    before = warnings.formatwarning
    argv = ["transfer", "--wd", "0.1", "--lr", "1e-3", "--n", "5e4", "--to-n", "2e5"]
    assert main([*argv, "--batch-size", "256"]) == 0
    assert warnings.formatwarning is before


@pytest.mark.parametrize(
    "module, argv, said",
    [
        ("optuna", ["search", "--data", "wine", "--model", "linear"],
         "wdlab search needs optuna: pip install 'wdlab[optuna]'"),
        ("tensorboard", ["sweep", *RUN[1:], "--wd", "0", "--log", "tensorboard:tb", "--out", "o"],
         "logging to TensorBoard needs tensorboard: pip install 'wdlab[tensorboard]'"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_named_in_one_line(tmp_path, capsys, monkeypatch, module, argv, said):
    """Without the extra: "ModuleNotFoundError: No module named 'optuna' (unexpected…)", and
    TensorBoard's line named the extra 'wdlab[torch]', which does not exist."""
    monkeypatch.setitem(sys.modules, module, None)  # ``import module`` fails, as uninstalled
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.chdir(tmp_path)
    assert said in one_line_error(argv, capsys)
    assert not (tmp_path / "o").exists()


def test_a_parquet_export_without_pyarrow_is_one_line_and_writes_nothing(
    tmp_path, capsys, monkeypatch
):
    assert main(["sweep", *RUN[1:], "--wd", "0", "--out", str(tmp_path / "s")]) == 0
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    capsys.readouterr()
    argv = ["export", str(tmp_path / "s"), "--format", "parquet", "--out", str(tmp_path / "pq")]
    err = one_line_error(argv, capsys)  # it was pandas' 485 characters, and an empty pq/ left
    assert "wdlab export --format parquet needs pyarrow: pip install 'wdlab[parquet]'" in err
    assert not (tmp_path / "pq").exists()


def test_empty_values_an_empty_out_and_too_small_a_timescale_are_refused(capsys):
    """Found by a new-user trial: ``--hidden 4,,4`` was read as 4,4 (inspect, timescale),
    ``verify --out ""`` wrote nothing without a word, and ``timescale --smallest 1`` trained
    subsets that cannot hold every class."""
    for args, says in [
        (["inspect", "mlp", "--in-dim", "3", "--hidden", "4,,4"], "an empty value between commas"),
        (["timescale", "--hidden", "4,,4"], "an empty value between commas"),
        (["verify", "--out", ""], "--out: expected a folder, got an empty path"),
        (["sweep", "--data", "digits", "--out", " "], "--out: expected a folder, got a blank"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(args)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and says in err, err
    pytest.importorskip("sklearn")
    assert main(["timescale", "--smallest", "9", "--seeds", "1", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "smallest 9 < the 10 classes" in err


def test_a_ctrl_c_swallowed_on_the_way_is_still_an_interrupt(monkeypatch, capsys):
    """Ctrl-C while numpy or matplotlib was being imported could be swallowed there, and the
    half-imported module failed next: exit 2 with a RecursionError "raised in your code,
    <frozen importlib._bootstrap>" (found by a new-user trial). An error after a Ctrl-C is the
    interrupt's: one line, exit 130; and a <frozen …> frame is nobody's code."""
    import os
    import signal
    import time

    import wdlab.cli

    def swallowing(_args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler runs here
        except KeyboardInterrupt:
            pass  # as an import cut short may leave it
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(wdlab.cli, "_run", swallowing)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's, as in a shell
    try:
        args = ["transfer", "--wd", "0.1", "--lr", "0.1", "--n", "10", "--batch-size", "1"]
        assert main(args) == 130
        assert capsys.readouterr().err == "wdlab transfer: interrupted\n"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, before)  # whatever an earlier test left
    code = compile("raise RuntimeError('x')", "<frozen importlib._bootstrap>", "exec")
    try:
        exec(code)
    except RuntimeError as exc:
        said = wdlab.cli.describe_error(exc)  # the innermost frame that is code: this test's
        assert "<frozen" not in said and f"{__file__}:" in said, said


def _stopped_in_a_hook(monkeypatch, signum) -> list:
    """The command's work (``wdlab.cli._run``) made a training that sends itself ``signum``
    inside a ``__del__`` (like a fork hook, a place Python cannot raise from), then goes on for
    5 s; the list it returns gets True if that training ran to its end."""
    import gc
    import os
    import time

    import wdlab.cli

    class InAHook:
        def __del__(self):
            os.kill(os.getpid(), signum)
            for _ in range(1000):  # the handler runs here, inside __del__
                pass

    finished = []

    def training(_args):
        InAHook()
        gc.collect()
        for _ in range(500):  # the training goes on: the signal must come back here
            time.sleep(0.01)
        finished.append(True)
        return 0

    monkeypatch.setattr(wdlab.cli, "_run", training)
    return finished


def test_a_ctrl_c_python_could_only_print_still_interrupts(monkeypatch, capsys):
    """Found by a new-user trial: a Ctrl-C that arrived while a DataLoader forked its workers
    was raised in a fork hook, where Python only prints it ("Exception ignored in:
    <function _releaseLock>"), and ``wdlab search`` went on to train every trial and exit 0.
    Such an interrupt is delivered again once the hook has returned: one line, exit 130."""
    import signal

    finished = _stopped_in_a_hook(monkeypatch, signal.SIGINT)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's, as in a shell
    hook = sys.unraisablehook
    try:
        args = ["transfer", "--wd", "0.1", "--lr", "0.1", "--n", "10", "--batch-size", "1"]
        assert main(args) == 130
        assert capsys.readouterr().err == "wdlab transfer: interrupted\n"
        assert not finished and sys.unraisablehook is hook  # restored
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_python_printed_as_the_command_ended_does_not_come_after_its_answer(
    monkeypatch, capsys
):
    """Found by a checking helper: 2 searches in 40 were ended by a second SIGINT after
    printing "interrupted": a worker's clean-up swallowed the same Ctrl-C while the command
    unwound, and its re-delivery came after the handler was restored. Once the command has
    its answer, such a Ctrl-C is only noted: one line, exit 130, nothing after it."""
    import os
    import signal
    import time

    import wdlab.cli

    class CleanUp:  # a DataLoader's __del__ as the interrupt unwinds the training
        def __del__(self):
            raise KeyboardInterrupt

    def training(_args):
        keep = CleanUp()  # noqa: F841  dropped (and its __del__ run) as the interrupt unwinds
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(500):
            time.sleep(0.01)
        return 0

    monkeypatch.setattr(wdlab.cli, "_run", training)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's, as in a shell
    try:
        args = ["transfer", "--wd", "0.1", "--lr", "0.1", "--n", "10", "--batch-size", "1"]
        assert main(args) == 130
        time.sleep(0.2)  # a re-delivery sent late would raise KeyboardInterrupt here
        assert capsys.readouterr().err == "wdlab transfer: interrupted\n"
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_ctrl_c_a_forked_worker_could_only_print_is_not_delivered_to_it_again(monkeypatch):
    """A DataLoader's worker is forked from the command with its handlers, and the Ctrl-C
    reaches it too: a KeyboardInterrupt it can only print (in a ``__del__``) is not delivered
    to the worker again (a second interrupt there, outside torch's own handling, printed the
    worker's traceback); the command itself is interrupted, and says so."""
    import os
    import signal
    import time

    import wdlab.cli

    class InAHook:
        def __del__(self):
            raise KeyboardInterrupt

    def training(_args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:  # noted; the command carries on to fork its worker
            pass
        child = os.fork()
        if child == 0:  # the worker
            try:
                InAHook()
                time.sleep(0.3)  # a re-delivery would interrupt this
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(child, 0)
        return os.waitstatus_to_exitcode(status)

    monkeypatch.setattr(wdlab.cli, "_run", training)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's, as in a shell
    try:
        args = ["transfer", "--wd", "0.1", "--lr", "0.1", "--n", "10", "--batch-size", "1"]
        assert main(args) == 0  # the worker ran its sleep to the end
    finally:
        signal.signal(signal.SIGINT, before)


def test_what_a_dataloader_cut_short_by_a_ctrl_c_raises_in_its_clean_up_is_not_printed(
    monkeypatch, capsys
):
    """Found by a checking helper: after a Ctrl-C while a DataLoader started its workers,
    ``Exception ignored in: <function _MultiProcessingDataLoaderIter.__del__>`` and an
    ``AttributeError`` (its ``__init__`` cut short) followed the one line. After a Ctrl-C,
    what torch's data loading raises as it is cleaned up is not printed; before one (or
    anyone else's), it is, as Python prints it."""
    import gc
    import os
    import signal
    import time

    import wdlab.cli

    class Iter:  # as torch's iterator: its __del__ is a function of torch.utils.data
        def __del__(self):
            raise AttributeError("'Iter' object has no attribute '_workers_status'")

    Iter.__del__.__module__ = "torch.utils.data.dataloader"

    def training(_args):
        Iter()
        gc.collect()  # before a Ctrl-C: printed
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            Iter()
            gc.collect()
            raise
        return 0

    printed = []  # Python's own hook, as a shell has it (pytest's records them otherwise)
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(str(u.exc_value)))
    monkeypatch.setattr(wdlab.cli, "_run", training)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's, as in a shell
    try:
        args = ["transfer", "--wd", "0.1", "--lr", "0.1", "--n", "10", "--batch-size", "1"]
        assert main(args) == 130
    finally:
        signal.signal(signal.SIGINT, before)
    assert printed == ["'Iter' object has no attribute '_workers_status'"]  # the one before
    assert capsys.readouterr().err == "wdlab transfer: interrupted\n"


def test_a_command_shows_no_resource_warning_python_hides():
    """Found by a checking helper: ``wdlab: warning: unclosed file <…worker.py>`` after a
    Ctrl-C (a ResourceWarning, which Python's own filters hide): a command shows its warnings
    once each, and hides those Python hides."""
    import argparse
    import types
    import warnings

    from wdlab.cli import _run

    def command(_args):
        warnings.warn("unclosed file <_io.TextIOWrapper>", ResourceWarning, stacklevel=1)
        warnings.warn("a warning of the user's", UserWarning, stacklevel=1)
        return 0

    entry = types.SimpleNamespace(run=command, light=True, name="x")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert _run(argparse.Namespace(command_entry=entry, command="x")) == 0
    assert [w.category for w in shown] == [UserWarning]


def test_a_sigterm_python_could_only_print_still_stops_the_command(monkeypatch, capsys):
    """A SIGTERM raised inside a fork hook or a ``__del__`` (where Python only prints it) was
    lost where Ctrl-C is ignored (a job started in the background, under nohup or a
    scheduler): ``wdlab search`` went on and exited 0 with "Exception ignored … raise
    Terminated" (found by a checking helper, 3 of 12 tries). It is raised again once that code
    has returned: one line, exit 143; the handlers and the unraisable hook are restored."""
    import signal

    finished = _stopped_in_a_hook(monkeypatch, signal.SIGTERM)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    hook = sys.unraisablehook
    try:
        args = ["transfer", "--wd", "0.1", "--lr", "0.1", "--n", "10", "--batch-size", "1"]
        assert main(args) == 143
        assert capsys.readouterr().err == "wdlab transfer: terminated\n"
        assert not finished and sys.unraisablehook is hook
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_data_file_without_its_function_or_a_folder_is_named_so(tmp_path, capsys):
    """A new-user trial: ``--data mydata.py`` listed the built-in sources, as if the name
    were misspelt, where ``--model mymodel.py`` said to name the function; ``--data
    /tmp:make_data`` said "No module named '/tmp'". The help names file.py:factory too."""
    out = str(tmp_path / "o")
    err = one_line_error(["sweep", "--data", "mydata.py", "--out", out], capsys)
    assert err == (
        "wdlab sweep: error: data 'mydata.py' names a file; name the function that returns "
        "the splits too: mydata.py:FUNCTION (e.g. mydata.py:make_data)\n"
    )
    err = one_line_error(["sweep", "--data", f"{tmp_path}:make_data", "--out", out], capsys)
    assert err == (
        f"wdlab sweep: error: cannot load data function '{tmp_path}:make_data': "
        f"'{tmp_path}' is a path, not a FILE.py\n"
    )
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    assert "cnn, file.py:factory or module:factory" in " ".join(capsys.readouterr().out.split())


def test_a_ctrl_c_after_the_json_answer_is_only_noted(monkeypatch, capsys):
    """A new-user trial: a Ctrl-C just after ``--json``'s document was written exited 130,
    "interrupted", with the success document on stdout. Once the document is out, a Ctrl-C is
    only noted: the command ends as its answer says."""
    import signal

    import wdlab.interrupts as interrupts

    real, said = interrupts.answered, []

    def answered_then_ctrl_c():
        real()
        said.append(True)
        signal.raise_signal(signal.SIGINT)  # lands in the main thread, here

    monkeypatch.setattr(interrupts, "answered", answered_then_ctrl_c)
    argv = ["transfer", "--wd", "0.1", "--lr", "1e-3", "--n", "100", "--batch-size", "10"]
    assert main([*argv, "--to-lr", "2e-3", "--json"]) == 0
    assert said == [True] and json.loads(capsys.readouterr().out)["weight_decay"] == 0.05


@pytest.mark.parametrize(
    "argv, said",
    [
        (["run", "--wd", "1e-5...1e-1:3"], "'1e-5...1e-1' has three dots; a range is LO..HI"),
        (["search", "--lr", "1e-4...1e-1:log"], "--lr: '1e-4...1e-1' has three dots"),
        (
            ["run", "--group-wd", "layers.*=0.1", "--group-wd", "layers.*=0.2"],
            "the pattern 'layers.*' is given twice; give each once",
        ),
        (
            ["inspect", "mlp", "--in-dim", "4", "--group-wd", "a=0.1", "--group-wd", "a=0.2"],
            "--group-wd: the pattern 'a' is given twice",
        ),
    ],
)
def test_a_range_with_three_dots_and_a_pattern_given_twice_are_refused(argv, said, capsys):
    """A new-user trial: ``1e-5...1e-1:3`` ran wd [1e-05, 0.000316, 0.01] (HI read as
    ``.1e-1``), and a ``--group-wd`` pattern given twice took the last weight decay, without
    a word either time. Both are one line, exit status 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err


def test_a_seed_given_twice_among_many_is_found_in_one_pass():
    """A new-user trial: ``--seeds`` and ``--wd`` grids of 100,000 values spun for minutes
    before the grid's size limit (a pairwise search for a repeat); the repeat is still named."""
    from wdlab.config_keys import seed_values
    from wdlab.textlists import parse_float_list

    with pytest.raises(ValueError, match="seed 7 is given twice"):
        seed_values([*range(100_000), 7], "seeds")
    assert len(seed_values(list(range(100_000)), "seeds")) == 100_000
    assert len(parse_float_list("1e-5..1e-1:100000", "wd")) == 100_000
