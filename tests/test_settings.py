from pathlib import Path

import pytest

from shipyard.errors import ConfigError
from shipyard.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_any_file() -> None:
    settings = load_settings()
    assert settings.config_file is None
    assert settings.demo.steps == 300


def test_values_come_from_the_yaml_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path / "s.yaml", "demo:\n  steps: 12\n  keep: 3\n"))
    assert (settings.demo.steps, settings.demo.keep) == (12, 3)


def test_shipyard_yaml_in_the_working_directory_is_the_default(tmp_path: Path) -> None:
    write(tmp_path / "shipyard.yaml", "demo:\n  seed: 9\n")
    assert load_settings().demo.seed == 9


def test_environment_overrides_file_and_arguments_override_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "s.yaml", "demo:\n  steps: 12\n  seed: 1\n")
    monkeypatch.setenv("SHIPYARD_DEMO__STEPS", "40")
    settings = load_settings(config)
    assert (settings.demo.steps, settings.demo.seed) == (40, 1)
    assert load_settings(config, demo={"steps": 5}).demo.steps == 5


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    config = write(tmp_path / "s.yaml", "demo:\n  save_evry: 5\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: unknown key 'demo\.save_evry'; did you mean 'save_every'\?"):
        load_settings(config)


def test_unknown_environment_variable_is_named_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_DEMO__STEPZ", "3")
    with pytest.raises(ConfigError, match="SHIPYARD_DEMO__STEPZ: unknown key; did you mean 'SHIPYARD_DEMO__STEPS'"):
        load_settings()


def test_bad_value_names_key_value_source_and_expectation(tmp_path: Path) -> None:
    config = write(tmp_path / "s.yaml", "demo:\n  save_every: 0\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: demo\.save_every = 0: Input should be greater than or equal to 1"):
        load_settings(config)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_DEMO__STEPS", "many")
    with pytest.raises(ConfigError, match=r"environment variable SHIPYARD_DEMO__STEPS: demo\.steps = 'many'"):
        load_settings()


def test_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_settings(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text", ["demo: [1\n", "- 1\n- 2\n"])
def test_file_that_is_not_a_mapping_is_named(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"bad\.yaml: not a YAML mapping"):
        load_settings(write(tmp_path / "bad.yaml", text))


def test_example_config_in_the_repo_loads() -> None:
    settings = load_settings(REPO / "shipyard.example.yaml")
    assert settings.demo.save_every == 10


def test_paths_in_a_config_file_are_relative_to_the_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "etc" / "lab.yaml"
    config.parent.mkdir()
    lines = ["home: state", "release: {store: releases}", "watch: {source: s3://bucket/run}"]
    lines += ["pipeline: {recipe: recipes/r.yaml, screening_suite: suites/s.yaml}"]
    lines += ["trust: {key: /abs/me.key, door_keys: {dashboard: keys/d.key}}"]
    config.write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(config.relative_to(tmp_path))
    etc = config.parent
    assert settings.home == etc / "state" and settings.release.store == str(etc / "releases")
    assert settings.pipeline.recipe == etc / "recipes" / "r.yaml"
    assert settings.pipeline.screening_suite == str(etc / "suites" / "s.yaml")  # a suite's file; a name stays
    assert load_settings(
        write(etc / "n.yaml", "pipeline: {screening_suite: capability}\n")
    ).pipeline.screening_suite == ("capability")
    assert settings.trust.door_keys["dashboard"] == etc / "keys" / "d.key"
    assert settings.watch.source == "s3://bucket/run" and settings.trust.key == Path("/abs/me.key")
    monkeypatch.setenv("SHIPYARD_RELEASE__STORE", "from-env")  # the environment is the caller's: its cwd
    assert load_settings(config).release.store == "from-env"


def test_outside_the_demo_profile_the_recipe_policy_and_screening_suite_must_be_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shipyard.demo.profile import DEMO
    from shipyard.profiles import choice

    assert choice(load_settings(), "recipe") == DEMO.recipe  # the tests run under profile: demo
    monkeypatch.delenv("SHIPYARD_PROFILE")
    plain = load_settings()
    for key in ("recipe", "policy", "screening_suite", "screening_task"):
        with pytest.raises(ConfigError, match=rf"pipeline.{key} is not set: name .* \(or set profile: demo"):
            choice(plain, key)
    assert choice(plain, "recipe", Path("mine.yaml")) == Path("mine.yaml")
    monkeypatch.setenv("SHIPYARD_PIPELINE__SCREENING_SUITE", "my-suite.yaml")
    assert choice(load_settings(), "screening_suite") == "my-suite.yaml"


def test_shipyard_config_names_the_file_and_is_not_taken_for_a_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_CONFIG", str(write(tmp_path / "w.yaml", "demo: {seed: 4}\n")))
    monkeypatch.setenv("SHIPYARD_DEBUG", "1")
    monkeypatch.setenv("SHIPYARD_IMAGE", "registry.example/shipyard:0.1.0")  # prefect.yaml's, not a setting
    assert load_settings().demo.seed == 4
    monkeypatch.setenv("SHIPYARD_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_settings()


def test_runs_each_see_their_own_source_line_policy_and_paths_resolve_against_the_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "lab.yaml",
        "pipeline: {policy: default.yaml, recipe: r.yaml}\nruns:\n"
        "  - {name: math, source: runs/math, line: math, policy: strict.yaml}\n"
        "  - {name: code, source: s3://lab/code, line: code}\n",
    )
    settings = load_settings(config)
    math, code = settings.for_run("math"), settings.for_run("code")
    assert (math.run, math.watch.source, math.release.line) == ("math", str(tmp_path / "runs/math"), "math")
    assert math.pipeline.policy == tmp_path / "strict.yaml" and math.pipeline.recipe == tmp_path / "r.yaml"
    assert (code.watch.source, code.pipeline.policy) == ("s3://lab/code", tmp_path / "default.yaml")
    assert settings.for_run(None) is settings
    with pytest.raises(ConfigError, match=r"no run named 'maht'.*math"):
        settings.for_run("maht")
    same_line = "runs:\n  - {name: a, source: x, line: main}\n  - {name: b, source: y, line: main}\n"
    with pytest.raises(ConfigError, match="each needs its own line"):
        load_settings(write(tmp_path / "bad.yaml", same_line))


def test_an_empty_stage_deployment_turns_the_split_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_PIPELINE__EVAL_DEPLOYMENT", "evaluate-checkpoint/gpu")
    assert load_settings().pipeline.eval_deployment == "evaluate-checkpoint/gpu"
    monkeypatch.setenv("SHIPYARD_PIPELINE__EVAL_DEPLOYMENT", "")
    assert load_settings().pipeline.eval_deployment is None


def test_posttrain_processes_is_a_count_or_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_PIPELINE__POSTTRAIN_PROCESSES", "auto")
    assert load_settings().pipeline.posttrain_processes == "auto"
    monkeypatch.setenv("SHIPYARD_PIPELINE__POSTTRAIN_PROCESSES", "8")
    assert load_settings().pipeline.posttrain_processes == 8
    monkeypatch.setenv("SHIPYARD_PIPELINE__POSTTRAIN_PROCESSES", "0")
    with pytest.raises(ConfigError, match="SHIPYARD_PIPELINE__POSTTRAIN_PROCESSES"):
        load_settings()
