"""Where each RL framework's checkpoints lie and when each is complete, from a listing alone."""

from shipyard.intake.layouts import Found, find_checkpoints

DCP = (".metadata", "__0_0.distcp", "__1_0.distcp")


def found(files: list[str], markers: dict[str, str] | None = None) -> dict[str, Found]:
    return {f.path: f for f in find_checkpoints(files, lambda name: (markers or {})[name])}


def test_nemo_rl_steps_are_complete_once_renamed_and_read_as_dcp() -> None:
    files = [f"step_10/policy/weights/{n}" for n in DCP] + ["step_10/policy/tokenizer/tokenizer.json"]
    files += [f"tmp_step_20/policy/weights/{n}" for n in DCP]
    files += ["step_30/policy/weights/iter_0000000/__0_0.distcp", "step_10/policy/optimizer/.metadata"]
    seen = found(files)
    assert (seen["step_10"].layout, seen["step_10"].complete, seen["step_10"].format) == ("nemo-rl", True, "dcp")
    assert seen["step_10"].weights == "policy/weights" and seen["step_10"].hf_files == "policy/tokenizer"
    assert not seen["tmp_step_20"].complete and "renames tmp_step" in seen["tmp_step_20"].reason
    assert seen["step_30"].format == "command"  # Megatron weights: the converter command


def test_prime_rl_broadcasts_wait_for_stable_and_are_preferred_to_its_dcp() -> None:
    files = ["broadcasts/step_5/model.safetensors", "broadcasts/step_5/config.json", "broadcasts/step_5/STABLE"]
    files += ["broadcasts/step_10/model.safetensors", "broadcasts/step_10/config.json"]
    files += [f"checkpoints/step_{s}/trainer/{n}" for s in (5, 15) for n in DCP]
    seen = found(files)
    assert seen["broadcasts/step_5"].complete and not seen["broadcasts/step_10"].complete
    assert "checkpoints/step_5/trainer" not in seen  # its HF broadcast is taken instead
    assert seen["checkpoints/step_15/trainer"].format == "dcp" and seen["checkpoints/step_15/trainer"].complete


def test_torchtitan_steps_are_complete_when_dcp_metadata_is_written() -> None:
    seen = found(["step-100/__0_0.distcp", "step-100/.metadata", "step-200/__0_0.distcp"])
    assert seen["step-100"].complete and seen["step-100"].layout == "torchtitan"
    assert not seen["step-200"].complete and ".metadata not yet written" in seen["step-200"].reason


def test_verl_actor_shards_follow_its_marker_and_keep_no_optimizer_state() -> None:
    files = ["latest_checkpointed_iteration.txt", "global_step_10/actor/fsdp_config.json"]
    files += [f"global_step_{s}/actor/model_world_size_2_rank_{r}.pt" for s in (10, 20) for r in (0, 1)]
    files += ["global_step_10/actor/optim_world_size_2_rank_0.pt", "global_step_10/actor/huggingface/config.json"]
    files += ["global_step_30/actor/dist_ckpt/common.pt", "global_step_30/actor/huggingface/config.json"]
    seen = found(files, {"latest_checkpointed_iteration.txt": "10\n"})
    actor = seen["global_step_10/actor"]
    assert (actor.complete, actor.format, actor.hf_files) == (True, "fsdp-ranks", "huggingface")
    assert not any(p == "optim_world_size_*" for p in actor.keep)
    assert not seen["global_step_20/actor"].complete
    assert seen["global_step_30/actor"].format == "command"


def test_slime_megatron_iterations_and_deepspeed_zero_need_their_markers() -> None:
    files = ["save/latest_checkpointed_iteration.txt", "save/iter_0000010/common.pt", "save/iter_0000020/common.pt"]
    files += ["_actor/latest", "_actor/global_step5/mp_rank_00_model_states.pt"]
    files += ["_actor/global_step7/mp_rank_00_model_states.pt", "global_step7_hf/config.json"]
    files += ["global_step7_hf/model.safetensors", "global_step7_hf/tokenizer.json"]
    markers = {"save/latest_checkpointed_iteration.txt": "10", "_actor/latest": "global_step7"}
    seen = found(files, markers)
    assert seen["save/iter_0000010"].complete and not seen["save/iter_0000020"].complete
    assert seen["_actor/global_step5"].format == "zero" and seen["_actor/global_step5"].complete
    assert "_actor/global_step7" not in seen and seen["global_step7_hf"].complete  # HF weights preferred


def test_open_instruct_steps_settle_when_a_later_step_appears() -> None:
    files = [f"output/step_{s}/{n}" for s in (100, 200) for n in ("config.json", "model.safetensors")]
    seen = found(files)
    assert seen["output/step_100"].complete and seen["output/step_100"].layout == "open-instruct"
    assert not seen["output/step_200"].complete and "taken once a later step appears" in seen["output/step_200"].reason


def test_a_checkpoint_without_config_takes_the_run_roots_else_the_earliest_checkpoints() -> None:
    from shipyard.intake.layouts import run_config

    fsdp = [f"out/checkpoint-{s}/pytorch_model_fsdp_0/{n}" for s in (10, 20) for n in DCP]
    fsdp += [f"out/checkpoint-{s}/trainer_state.json" for s in (10, 20)]
    seen = found(fsdp)
    assert run_config(fsdp, seen["out/checkpoint-20"], seen.values()) is None
    with_root = [*fsdp, "out/config.json"]
    assert run_config(with_root, seen["out/checkpoint-20"], seen.values()) == "out"
    titan = ["config.json", "step-5/.metadata", "step-5/__0_0.distcp"]
    assert run_config(titan, found(titan)["step-5"], found(titan).values()) == "."
    prime = ["broadcasts/step_5/model.safetensors", "broadcasts/step_5/config.json", "broadcasts/step_5/STABLE"]
    prime += [f"checkpoints/step_15/trainer/{n}" for n in DCP]
    seen = found(prime)
    assert run_config(prime, seen["checkpoints/step_15/trainer"], seen.values()) == "broadcasts/step_5"


def test_the_framework_of_a_run_is_named_from_its_layouts() -> None:
    from shipyard.intake.frameworks import detect

    def named(files: list[str], markers: dict[str, str] | None = None) -> str:
        return detect(list(found(files, markers).values())).framework

    trl = [f"checkpoint-{s}/{n}" for s in (50, 100, 150) for n in ("model.safetensors", "trainer_state.json")]
    assert named(trl) == "TRL / HF Trainer"
    assert detect(list(found(trl).values())).interval == 50
    fsdp = [f"checkpoint-5/pytorch_model_fsdp_0/{n}" for n in DCP] + ["checkpoint-5/trainer_state.json"]
    assert named(fsdp) == "TRL / HF Trainer under FSDP (SHARDED_STATE_DICT)"
    assert detect(list(found(fsdp).values())).without_config == 1
    verl = ["latest_checkpointed_iteration.txt", "global_step_10/actor/model_world_size_1_rank_0.pt"]
    assert named(verl, {"latest_checkpointed_iteration.txt": "10"}) == "veRL"
    openrlhf = ["_actor/latest", "_actor/global_step5/mp_rank_00_model_states.pt"]
    assert named(openrlhf, {"_actor/latest": "global_step5"}) == "OpenRLHF (DeepSpeed)"
    zero = ["latest", "global_step5/zero_pp_rank_0_mp_rank_00_model_states.pt"]
    assert named(zero, {"latest": "global_step5"}) == "DeepSpeed ZeRO"
    nemo = [f"step_10/policy/weights/{n}" for n in DCP]
    assert named(nemo) == "NeMo-RL"
    assert named(["broadcasts/step_5/model.safetensors", "broadcasts/step_5/STABLE"]) == "prime-rl"
    assert named(["step-100/.metadata", "step-100/__0_0.distcp"]) == "torchtitan"
    slime = ["latest_checkpointed_iteration.txt", "iter_0000010/common.pt"]
    megatron = detect(list(found(slime, {"latest_checkpointed_iteration.txt": "10"}).values()))
    assert megatron.framework == "slime / Megatron" and megatron.needs_command
    instruct = [f"output/step_{s}/{n}" for s in (100, 200) for n in ("config.json", "model.safetensors")]
    assert named(instruct) == "open-instruct"
    assert detect([]).lines() == ["no checkpoint found yet"]
