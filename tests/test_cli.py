"""The command line's surface: it starts without torch, its flags mean the same in every
command, its help shows the defaults, and a bare ``sweep`` tries a grid and says which."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wdlab.cli import build_parser, main
from wdlab.cli import facts as cli_facts
from wdlab.cli.experiment import experiment_config, sweep_config
from wdlab.cli.flags import HelpFormatter
from wdlab.pipelines.experiment import grid_size


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


COMMANDS = _subparsers(build_parser())


def test_the_facts_file_says_what_the_registries_say():
    """facts.json (what the parser is built from, without torch) is the registries' and the
    config schema's own answer; after a change, `python -m wdlab.cli.facts` writes it again."""
    current = json.loads(cli_facts.dumps(cli_facts.collect()))
    assert cli_facts.load() == current, "facts.json is stale: run python -m wdlab.cli.facts"


def test_help_version_transfer_and_usage_errors_import_no_torch():
    """Built in a fresh interpreter: the parser, --version, --help of every command, transfer
    and a usage error leave torch (and numpy, matplotlib) unimported."""
    script = textwrap.dedent(
        """
        import contextlib, io, sys
        from wdlab.cli import COMMANDS, build_parser, main

        build_parser()
        codes = []
        for argv in (["--version"], ["--help"], *[[c.name, "--help"] for c in COMMANDS],
                     ["sweep", "--weight-decay"], ["run", "--bogus"], ["demo", "--wd", "-1"]):
            sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
            try:
                main(argv)
            except SystemExit as exc:
                codes.append(exc.code)
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["transfer", "--wd", "0.1", "--lr", "1e-3", "--n", "5e4",
                         "--batch-size", "256", "--to-n", "2e5"])
        heavy = [m for m in ("torch", "numpy", "matplotlib") if m in sys.modules]
        print(codes, code, "0.025" in out.getvalue(), heavy)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    n_help = len(COMMANDS) + 2
    assert proc.stdout.strip() == f"{[0] * n_help + [2, 2, 2]} 0 True []"


@pytest.mark.parametrize("terminal, said", [(True, "'loading torch…\\r\\x1b[K'"), (False, "''")])
def test_loading_torch_is_said_on_a_terminal_only(terminal, said):
    """A command that needs torch imports it before running, with one "loading torch…" line on
    stderr that is erased once torch is there; nothing at all when stderr is not a terminal."""
    script = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from wdlab.cli import load_torch

        class Stream(io.StringIO):
            def isatty(self):
                return {terminal}

        sys.stderr = err = Stream()
        load_torch()
        sys.stderr = sys.__stderr__
        print("torch" in sys.modules, repr(err.getvalue()))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"True {said}"


@pytest.mark.parametrize("out, err, shown", [(True, False, False), (False, True, True)])
def test_progress_is_shown_where_the_bar_is_drawn(monkeypatch, out, err, shown):
    """tqdm draws on stderr: a bar is shown when stderr is a terminal, whatever stdout is (it
    followed stdout: ``2> log`` on a terminal filled the log with bar updates)."""
    import argparse

    from wdlab.cli.common import show_progress

    monkeypatch.setattr(sys.stdout, "isatty", lambda: out, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: err, raising=False)
    assert show_progress(argparse.Namespace()) is shown
    assert show_progress(argparse.Namespace(json=True)) is False


@pytest.mark.parametrize("command", ["demo", "inspect", "run", "sweep", "transfer"])
def test_wd_and_weight_decay_are_one_flag_everywhere(command):
    """Every command with a weight decay spells it --wd and accepts --weight-decay."""
    p = COMMANDS[command]
    required = ["--lr", "1", "--n", "1", "--batch-size", "1"] if command == "transfer" else []
    a = p.parse_args(["--wd", "0.5", *required])
    b = p.parse_args(["--weight-decay", "0.5", *required])
    assert vars(a) == vars(b) and a.wd in ("0.5", 0.5)


def test_rule_choices_are_the_same_where_decay_is_trained_or_inspected():
    from wdlab.config import RULES

    for command in ("run", "sweep", "inspect"):
        (rule,) = [a for a in COMMANDS[command]._actions if "--rule" in a.option_strings]
        assert list(rule.choices) == list(RULES)
    assert list(RULES) == ["default", "everything", "timm", "nanogpt", "hf"]


@pytest.mark.parametrize("command", ["run", "sweep", "inspect"])
def test_wd_schedule_and_group_wd_exist_where_decay_is_trained_or_inspected(command):
    args = COMMANDS[command].parse_args(
        ["--wd-schedule", "cosine:0.04:0.4:100", "--group-wd", "head.*=0.01", "--group-wd", "a=0"]
    )
    assert args.wd_schedule == "cosine:0.04:0.4:100" and args.group_wd == ["head.*=0.01", "a=0"]


def test_a_run_with_a_wd_schedule_or_group_wd_trains_and_bad_values_are_one_line(tmp_path, capsys):
    """The config takes both keys (checked) and a run applies them (it refused them before
    the trainer could: tests/test_decay_in_sweeps.py checks the numbers); a bad value is one
    line, exit 2, before training."""
    base = ["run", "--data", "wine", "--model", "linear", "--epochs", "1", "--out", str(tmp_path)]
    cfg = experiment_config(COMMANDS["run"].parse_args([*base[1:], "--group-wd", "w*=1e-3"]))
    assert cfg.decay.group_wd == {"w*": 1e-3}
    for extra in (["--wd-schedule", "cosine:0.04:0.4:100"], ["--group-wd", "w*=1e-3"]):
        assert main([*base, "--wd", "0,1e-3", *extra]) == 0
        capsys.readouterr()
    for extra, fragment in (
        (["--wd-schedule", "cosine:0:0.4:100"], "decay.wd_schedule (--wd-schedule): weight-decay"),
        (["--wd-schedule", "cosine:0.04"], "decay.wd_schedule (--wd-schedule): weight-decay"),
        (["--group-wd", "w*"], "decay.group_wd (--group-wd): expected PATTERN=WD"),
        (["--group-wd", "w*=-1"], "decay.group_wd.w*: weight decays must be"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1, err


def test_no_weight_decay_or_lr_given_is_said_in_one_line(tmp_path, capsys):
    """An empty list of weight decays (or of learning rates) is named as none given, from
    Python, flags and a TOML file alike (it said 'weight decays must be finite numbers >= 0,
    got []'); nothing is written."""
    import wdlab

    none = "decay.weight_decay: no weight decay was given; give at least one"
    with pytest.raises(ValueError, match=f"^{none}"):
        wdlab.sweep("linear", "wine", weight_decay=[], epochs=1)
    with pytest.raises(ValueError, match=r"^train\.lr: no learning rate was given"):
        wdlab.sweep("linear", "wine", lr=[], epochs=1)
    (tmp_path / "empty.toml").write_text("[decay]\nweight_decay = []\n")
    out = str(tmp_path / "s")
    for argv in (["--wd="], [str(tmp_path / "empty.toml")]):
        assert main(["sweep", "--data", "wine", "--epochs", "1", "--out", out, *argv]) == 2
        err = capsys.readouterr().err
        flagged = none.replace("decay.weight_decay:", "decay.weight_decay (--wd):")
        assert err == f"wdlab sweep: error: {flagged}, e.g. [0, 1e-4]\n"
    assert not (tmp_path / "s").exists()


def test_every_default_is_shown_in_help():
    """Each flag with a default says it in its help: ``(default: …)``; the experiment flags
    show the schema's default (their own argparse default is None: a given flag wins)."""
    for name, p in COMMANDS.items():
        formatter = HelpFormatter(prog=name)
        for action in p._actions:
            if isinstance(action, argparse._HelpAction) or action.dest == "config":
                continue
            text = formatter._get_help_string(action)
            d = action.default
            has_default = d not in (None, False, (), []) and d is not argparse.SUPPRESS
            if has_default:
                assert "(default" in text, (name, action.option_strings, text)
    sweep_help = COMMANDS["sweep"].format_help()
    for fragment in ("(default: 100)", "(default: mlp)", "(default: 2048)", "(default: local)"):
        assert fragment in " ".join(sweep_help.split())


def _flag_help(command: str, flag: str) -> str:
    (action,) = [a for a in COMMANDS[command]._actions if flag in a.option_strings]
    return " ".join(HelpFormatter(prog=command)._get_help_string(action).split())


def test_each_commands_help_says_the_default_it_takes(capsys):
    """Found by a new-user trial: ``sweep --help`` said "--seeds (default: seed 0)" where a
    bare sweep runs 3 seeds; ``run --help`` said "--keep (default: best)", a value run refuses;
    (a new-user trial then found ``--keep {best,all,none}`` and ``--checkpoint`` offered by
    ``run --help``, which refuses them: hidden there now, still refused with the reason);
    ``search --help`` gave no default for --lr, --wd or --mode; ``demo --dim 1`` named no
    flag."""
    seeds = _flag_help("sweep", "--seeds")
    assert "(default: 0,1,2 when no grid key is given)" in seeds and "seed 0" not in seeds
    assert _flag_help("run", "--seeds").endswith("(default: seed 0)")
    hidden = [
        a for a in COMMANDS["run"]._actions if {"--keep", "--checkpoint"} & set(a.option_strings)
    ]
    assert [a.help for a in hidden] == [argparse.SUPPRESS] * 2  # refused by run: not offered
    assert _flag_help("sweep", "--keep").endswith("or none (default: best)")
    assert "(default: 0.1, not searched)" in _flag_help("search", "--lr")
    assert "(default: 1e-6..1:log when no range is given)" in _flag_help("search", "--wd")
    assert "(default: coupled, not searched)" in _flag_help("search", "--mode")
    assert main(["demo", "--dim", "1"]) == 2
    assert "dim (--dim) must be >= 4, got 1" in capsys.readouterr().err


def test_a_bare_sweep_tries_a_default_grid_and_says_so(tmp_path, capsys):
    """`wdlab sweep --data X` with no grid key sweeps several modes, a log range of weight
    decays with 0, over 3 seeds, and says so with its answer (and at the start, on a
    terminal); any grid key given (flag or file) keeps the one-configuration defaults."""
    from wdlab.config import SWEEP_GRID

    sweep = COMMANDS["sweep"]
    cfg, note = sweep_config(sweep.parse_args(["--data", "wine"]))
    assert cfg.decay.modes == SWEEP_GRID["decay.modes"] and len(cfg.decay.modes) >= 2
    wds = cfg.decay.weight_decay
    assert wds[0] == 0 and len(wds) >= 5 and wds[-1] / wds[1] >= 1e3
    assert cfg.train.seeds == [0, 1, 2]
    assert note.startswith("no grid given") and note.endswith("= 36 runs")
    given, note = sweep_config(sweep.parse_args(["--data", "wine", "--wd", "0.1"]))
    assert given.decay.modes == ["coupled"] and given.train.seeds == [0]
    # part of the grid given: the rest is said, as it differs from the no-grid sweep's
    assert note == (
        "it tries modes coupled × wd 0.1 × 1 seed × lr 0.1 = 2 runs (--mode, --seeds not "
        "given: the default of each, not the no-grid sweep's)"
    )
    toml = tmp_path / "e.toml"
    toml.write_text('[train]\nseeds = "2"\n')
    from_file, note = sweep_config(sweep.parse_args([str(toml)]))
    assert from_file.train.seeds == [0, 1] and from_file.decay.weight_decay == [0.0]
    assert "(--mode, --wd not given" in note
    whole = ["--data", "wine", "--mode", "l2", "--wd", "0,1", "--seeds", "2"]
    assert sweep_config(sweep.parse_args(whole))[1] == ""  # the whole grid given: nothing to say
    run = experiment_config(COMMANDS["run"].parse_args(["--data", "wine"]))
    assert grid_size(run) == 1
    argv = ["sweep", "--data", "wine", "--model", "linear", "--epochs", "2", "--json"]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["grid"].startswith("no grid given") and doc["counts"]["done"] == 36
    assert err == ""  # not a terminal: said with the answer only


def test_an_unknown_flag_is_named_with_the_flags_it_resembles(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--weigth-decay", "0.1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "wdlab sweep: error: unrecognized arguments: --weigth-decay "
        "(did you mean --weight-decay?)\n"
    )
    with pytest.raises(SystemExit):  # a flag the command refuses is not suggested
        main(["search", "--patinece", "3"])
    assert capsys.readouterr().err == "wdlab search: error: unrecognized arguments: --patinece\n"
    with pytest.raises(SystemExit):  # the command's own flag before it: where it goes
        main(["--json", "ls"])
    out, err = capsys.readouterr()
    assert (
        err == "wdlab ls: error: unrecognized arguments: --json (--json goes after the "
        "command: wdlab ls …)\n"
    )
    assert json.loads(out)["status"] == 2


def test_run_lists_every_file_it_wrote(tmp_path, capsys):
    """wdlab run's closing list names each file it wrote, figures included (gap.png and
    weight_norm.png were written and not named; found by a new-user trial), aligned."""
    out = tmp_path / "r"
    flags = ["--data", "wine", "--model", "mlp", "--hidden", "8", "--optimizer", "adamw"]
    flags += ["--mode", "decoupled", "--wd", "0,0.1", "--seeds", "1", "--epochs", "2"]
    assert main(["run", *flags, "--out", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if f": {out}" in ln]
    named = {Path(ln.split(": ", 1)[1]).name for ln in lines}
    written = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert named == written and {"gap.png", "report.html"} <= named
    assert len({ln.index(":") for ln in lines}) == 1  # one column of labels


@pytest.mark.parametrize(
    ("flag", "said"),
    [
        (["--wd", "0,,1"], "decay.weight_decay (--wd): expected numbers separated by commas"),
        (["--seeds", "0,,1"], "train.seeds (--seeds): an empty value between commas in '0,,1'"),
        (["--hidden", "8,,4"], "model.hidden (--hidden): an empty value between commas in '8,,4'"),
    ],
)
def test_an_empty_value_between_commas_is_refused(tmp_path, capsys, flag, said):
    """``--wd 0,,1`` was read as [0, 1]: one line now, nothing made; a trailing comma is a
    one-value list (``--seeds 3,`` is seed 3 alone, ``--seeds 3`` three seeds)."""
    out = tmp_path / "s"
    assert main(["sweep", "--data", "wine", "--epochs", "1", *flag, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0] and not out.exists()
    sweep = COMMANDS["sweep"]
    assert sweep_config(sweep.parse_args(["--seeds", "3,"]))[0].train.seeds == [3]
    assert sweep_config(sweep.parse_args(["--seeds", "3"]))[0].train.seeds == [0, 1, 2]


def test_model_flags_default_the_same_in_inspect_run_and_sweep():
    """--hidden, --activation, --layernorm: inspect shows the model run and sweep train."""
    from wdlab.config import ModelConfig

    shown = COMMANDS["inspect"].parse_args([])
    m = ModelConfig()
    assert (list(shown.hidden), shown.activation, shown.layernorm) == (
        m.hidden,
        m.activation,
        m.layernorm,
    )
    for command in ("run", "sweep"):
        (act,) = [a for a in COMMANDS[command]._actions if "--activation" in a.option_strings]
        assert f"default: {m.activation}" in act.help


@pytest.mark.parametrize(
    "argv",
    [
        ["transfer", "--wd", "x", "--lr", "1", "--n", "1", "--batch-size", "1", "--json"],
        ["transfer", "--wd", "1e-320", "--lr", "0.1", "--n", "9", "--batch-size", "3", "--json"],
        ["show", "no-such-study", "--json"],
        ["ls", "--json", "--bogus"],
    ],
    ids=["usage", "value", "missing", "unknown flag"],
)
def test_under_json_a_refusal_is_one_json_document_too(argv, tmp_path, monkeypatch, capsys):
    """--json prints exactly one JSON document, a refusal's too: {"error", "status"} on
    stdout, the same line on stderr, exit status 2."""
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # a usage error exits from argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    doc = json.loads(out)
    assert doc == {"error": doc["error"], "status": 2} and doc["error"]
    assert err.splitlines() == [f"wdlab {argv[0]}: error: {doc['error']}"]


def test_inspect_builds_a_factory_at_its_own_sizes_unless_given(tmp_path, monkeypatch, capsys):
    """``wdlab inspect file.py:make`` shows what the factory builds: its own in_dim/out_dim
    defaults (it was given 1000 and 1), the flags' where given; a factory that requires a
    size nobody gives is one line (not the seed in the size's place)."""
    (tmp_path / "sized_factory.py").write_text(
        textwrap.dedent("""
        from torch import nn

        def make(seed=0, in_dim=10, out_dim=2):
            return nn.Sequential(nn.Linear(in_dim, 32), nn.ReLU(), nn.Linear(32, out_dim))

        def need(in_dim):
            return nn.Linear(in_dim, 2)
        """)
    )
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "sized_factory.py:make", "--json"]) == 0
    shapes = {t["name"]: t["shape"] for t in json.loads(capsys.readouterr().out)["parameters"]}
    assert shapes["0.weight"] == [32, 10] and shapes["2.weight"] == [2, 32]
    assert main(["inspect", "sized_factory.py:make", "--in-dim", "5", "--json"]) == 0
    shapes = {t["name"]: t["shape"] for t in json.loads(capsys.readouterr().out)["parameters"]}
    assert shapes["0.weight"] == [32, 5]
    assert main(["inspect", "sized_factory.py:need"]) == 2
    err = capsys.readouterr().err  # and where to give it (a new-user trial found no word)
    assert "requires in_dim, which is not known here" in err and "--in-dim" in err


def test_python_dash_m_wdlab_is_the_command_line():
    """A new-user trial: ``python -m wdlab`` failed ("'wdlab' is a package and cannot be
    directly executed"); only the ``wdlab`` script and ``python -m wdlab.cli`` ran."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import wdlab

    src = str(Path(wdlab.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run([sys.executable, "-m", "wdlab", "--version"], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == f"wdlab {wdlab.__version__}"


def test_run_takes_the_max_memory_its_refusal_names(tmp_path, capsys):
    """A README check: run's memory refusal said "(--max-memory); raise it", a flag only sweep
    and search had ("unrecognized arguments" in run). Every command has it, with one text."""
    out = tmp_path / "r"
    assert (
        main(["run", "--data", "wine", "--epochs", "1", "--max-memory", "0.001", "--out", str(out)])
        == 2
    )
    assert "more than max_memory_mb=0.001 (--max-memory); raise it" in capsys.readouterr().err
    helps = {c: _flag_help(c, "--max-memory") for c in ("run", "sweep", "search")}
    assert len(set(helps.values())) == 1
