"""Recipes and their data: the built-in recipe loads; every kind of mistake gets a message naming it."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from shipyard.demo import preference_data, safety_data
from shipyard.demo.profile import RECIPE as DEFAULT_RECIPE
from shipyard.demo.tiny import build_tokenizer
from shipyard.errors import ConfigError
from shipyard.posttraining.data import load_stage_data
from shipyard.posttraining.recipe import load_recipe, recipe_digest

STAGE = "  - {name: preference, method: dpo, dataset: prefs.jsonl, max_steps: 5}\n"
PAIR = {"prompt": [{"role": "user", "content": "1+1="}], "chosen": [{"role": "assistant", "content": "2"}]}


def write_recipe(tmp_path: Path, stages: str = STAGE, rows: list[dict[str, object]] | None = None) -> Path:
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows or []))
    path = tmp_path / "recipe.yaml"
    path.write_text("stages:\n" + stages)
    return path


def test_built_in_recipe_loads_with_preference_then_safety() -> None:
    recipe = load_recipe(DEFAULT_RECIPE)
    assert [s.name for s in recipe.stages] == ["preference", "safety"]
    assert recipe_digest(recipe) == recipe_digest(load_recipe(DEFAULT_RECIPE))


def test_built_in_data_is_what_its_scripts_write() -> None:
    for split in ("train", "heldout"):
        path = preference_data.DATA_DIR / f"arithmetic_preferences.{split}.jsonl"
        assert [json.loads(line) for line in path.read_text().splitlines()] == preference_data.rows(split)
        path = safety_data.DATA_DIR / f"safety_preferences.{split}.jsonl"
        assert [json.loads(line) for line in path.read_text().splitlines()] == safety_data.rows(split)
    train = {r["prompt"][0]["content"] for r in safety_data.rows("train")}
    assert not train & {r["prompt"][0]["content"] for r in safety_data.rows("heldout")}


def test_unknown_key_gets_did_you_mean(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, STAGE.replace("max_steps: 5", "max_steps: 5, learning_rat: 0.1"))
    with pytest.raises(
        ConfigError, match=r"(?s)recipe.yaml.*unknown key 'stages.0.learning_rat'; did you mean 'learning_rate'"
    ):
        load_recipe(path)


def test_length_must_be_given_once(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, STAGE.replace("max_steps: 5", "max_steps: 5, epochs: 1"))
    with pytest.raises(ConfigError, match=r"stages.0: give exactly one of epochs and max_steps"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "dataset .*prefs.jsonl is empty"),
        (
            [PAIR],
            r"dataset .*prefs.jsonl: dpo needs columns prompt\+chosen\+rejected or chosen\+rejected; "
            "found chosen, prompt",
        ),
    ],
)
def test_data_problems_name_the_stage_and_file(tmp_path: Path, rows: list[dict[str, object]], message: str) -> None:
    path = write_recipe(tmp_path, rows=rows)
    with pytest.raises(ConfigError, match=f"recipe.yaml: stage 'preference': {message}"):
        load_stage_data(path, load_recipe(path).stages[0], build_tokenizer())


def test_conversational_data_needs_a_chat_template(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, rows=[PAIR | {"rejected": [{"role": "assistant", "content": "3"}]}])
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ConfigError, match=r"is conversational .* no chat template"):
        load_stage_data(path, load_recipe(path).stages[0], tokenizer)


def test_bad_json_line_and_missing_file_are_named(tmp_path: Path) -> None:
    path = write_recipe(tmp_path)
    (tmp_path / "prefs.jsonl").write_text(json.dumps(PAIR) + "\n{not json\n")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'prefs.jsonl'}:2: not a JSON object")):
        load_stage_data(path, load_recipe(path).stages[0], build_tokenizer())
    (tmp_path / "prefs.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"dataset prefs.jsonl not found"):
        load_stage_data(path, load_recipe(path).stages[0], build_tokenizer())


def test_a_deepspeed_config_file_keys_the_candidate_by_its_content(tiny_model_dir: Path, tmp_path: Path) -> None:
    from shipyard.posttraining.posttrain import _inputs

    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("deepspeed: ds.json\nstages:\n  - {name: p, method: dpo, dataset: d.jsonl, max_steps: 1}\n")
    recipe = load_recipe(recipe_file)
    data = [SimpleNamespace(digest="d")]  # the stage's data digest: only the keys matter here
    before = _inputs(tiny_model_dir, recipe, recipe_file, data)  # type: ignore[arg-type]
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))  # same name, new content
    after = _inputs(tiny_model_dir, recipe, recipe_file, data)  # type: ignore[arg-type]
    assert before["recipe_digest"] == after["recipe_digest"] and before["deepspeed_digest"] != after["deepspeed_digest"]
