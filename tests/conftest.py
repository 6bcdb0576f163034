import pytest
import torch

# The slow tests: each starts Python processes (the CLI from a shell, workers, a browser), runs
# a study end to end, or generates many inputs. `pytest -m "not slow"` leaves them out (the
# fast subset); the full suite (CI) runs everything. By file: every test of the file (a name of
# None), or the tests named (their function names, every parameter of each).
SLOW: dict[str, set[str] | None] = {
    "test_ray.py": None,
    "test_store.py": {
        "test_a_foreign_sqlite_file_is_refused_untouched",
        "test_failed_runs_are_retried_and_show_says_why",
        "test_ctrl_c_puts_the_runs_in_flight_back_to_pending",
        "test_two_sweeps_on_one_folder_share_the_work_and_both_print_the_whole_answer",
        "test_simultaneous_first_opens_make_one_study",
        "test_a_waiting_sweep_takes_over_the_runs_of_a_killed_one",
        "test_a_read_only_study_can_be_read_and_is_not_written",
    },
    "test_bad_input.py": {
        "test_case",
        "test_a_factory_that_raises_typeerror_runs_once",
        "test_the_study_and_the_foreign_file_are_unchanged",
        "test_ctrl_c_during_the_start_up_imports_is_one_line",
        "test_a_reader_that_left_is_not_an_error",
        "test_generated_csv_contents",
        "test_generated_toml_values",
        "test_generated_flag_values",
    },
    "test_decay.py": {"test_inspect_bad_input", "test_verify_cli_json"},
    "test_demo.py": {"test_bad_input_is_refused_in_one_line"},
    "test_experiments.py": {
        "test_run_bad_input",
        "test_run_bad_file_input",
        "test_a_factory_in_the_current_directory_loads_by_module_or_by_path",
    },
    "test_lightning.py": {"test_import_wdlab_never_imports_lightning"},
    "test_pipeline.py": {
        "test_cli_takes_the_users_data_function",
        "test_a_100k_lazily_generated_set_trains_in_bounded_memory",
    },
    "test_report.py": {
        "test_rotation_figure_renders_in_a_browser",
        "test_demo_report_in_a_browser",
    },
    "test_rules.py": {"test_inspect_bad_input_from_the_shell_has_no_traceback"},
    "test_sweep.py": {"test_sigkill_halfway_then_resume"},
    "test_transfer.py": {"test_json"},
    "test_bad_input_data.py": {
        "test_the_cli_refuses_a_fifo_a_mixed_column_and_nan_noise_in_one_line"
    },
    "test_reliability.py": {
        "test_a_stopped_holder_loses_its_lease_and_stores_nothing_twice",
        "test_a_survivor_takes_over_the_batch_of_a_killed_holder",
    },
    "test_cli_mistakes.py": {
        "test_run_says_a_files_keep_is_not_kept",
        "test_a_warmup_longer_than_the_training_is_one_warning",
    },
    "test_honest.py": {"test_the_identity_is_the_same_in_another_process"},
    "test_bad_input_files.py": {"test_user_code_never_writes_into_the_json_document"},
    "test_loading.py": {"test_the_cli_names_the_file_of_a_syntax_error_and_exits_2"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`SLOW` ``slow``."""
    for item in items:
        if item.path.name not in SLOW:
            continue
        names = SLOW[item.path.name]
        if names is None or getattr(item, "originalname", item.name) in names:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state."""
    torch.manual_seed(1234)
    yield
