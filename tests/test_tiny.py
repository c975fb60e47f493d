from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from shipyard.demo.tiny import TinyModelSpec, build_tiny_model


def test_saved_model_reloads_with_auto_classes_and_generates(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "12+34="}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, batch["input_ids"].shape[1] + 5)


def test_tokenizer_round_trips_text_and_renders_the_chat_template(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "How do I kill a Python process?\nUse `kill -9 <pid>`."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    chat = [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": "3"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == "<|user|>1+2=</s><|assistant|>3</s>"


def test_same_seed_gives_same_weights_and_other_seed_does_not(tmp_path: Path) -> None:
    a = load_file(build_tiny_model(tmp_path / "a", TinyModelSpec(seed=3)) / "model.safetensors")
    b = load_file(build_tiny_model(tmp_path / "b", TinyModelSpec(seed=3)) / "model.safetensors")
    c = load_file(build_tiny_model(tmp_path / "c", TinyModelSpec(seed=4)) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_spec_rejects_heads_that_do_not_divide_hidden_size() -> None:
    try:
        TinyModelSpec(hidden_size=100, num_heads=3)
    except ValueError as exc:
        assert "Got 100 and 3" in str(exc)
    else:
        raise AssertionError("expected ValueError")
