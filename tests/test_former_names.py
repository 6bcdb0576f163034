"""Names renamed to the glossary (README, Architecture) keep their former spelling for one
release: the same object, with a DeprecationWarning naming the new one."""

import pytest

from wdlab.optimizers import OPTIMIZERS


def test_experiment_result_is_sweep_result_with_a_warning():
    import wdlab.pipelines
    import wdlab.pipelines.results

    for module in (wdlab.pipelines, wdlab.pipelines.results):
        with pytest.warns(DeprecationWarning, match="ExperimentResult is SweepResult"):
            assert module.ExperimentResult is wdlab.pipelines.SweepResult
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        _ = wdlab.pipelines.NoSuchName
    assert "ExperimentResult" not in wdlab.pipelines.__all__


def test_optimizer_spec_builtin_is_own_wd_mode_with_a_warning():
    adam, adamw = OPTIMIZERS["adam"], OPTIMIZERS["adamw"]
    with pytest.warns(DeprecationWarning, match="OptimizerSpec.own_wd_mode"):
        assert adamw.builtin == adamw.own_wd_mode == "decoupled"
    options = {"decoupled_weight_decay": True}
    with pytest.warns(DeprecationWarning, match="own_wd_mode_with"):
        assert adam.builtin_meaning(options) == adam.own_wd_mode_with(options) == "decoupled"
    assert adam.own_wd_mode_with({}) == "coupled" and OPTIMIZERS["rprop"].own_wd_mode is None
