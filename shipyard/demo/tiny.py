"""Tiny causal language models built locally, for tests, the demo and benchmarks.

`build_tiny_model` makes a small Llama-architecture model with random, seeded
weights and a character-level tokenizer made with the `tokenizers` library
(every printable ASCII character is a token, plus the chat role markers), with
a chat template, and saves both with `save_pretrained`. Nothing is downloaded.
Real users point Shipyard at real models; the same loading code serves both.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Each message is `<|role|>content</s>`; the assistant's content is wrapped in
# generation markers so that TRL can train on assistant tokens only.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ message['content'] + '</s>' }}{% endgeneration %}"
    "{%- else -%}"
    "{{ message['content'] + '</s>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of a tiny model. The defaults learn two-digit arithmetic on a CPU in minutes."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_positions: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size must be a multiple of num_heads. Got {self.hidden_size} and {self.num_heads}."
            )


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII with a chat template."""
    specials = [PAD, UNK, BOS, EOS, *ROLE_TOKENS]
    chars = [*sorted(set(string.printable) - set("\t\n\r\x0b\x0c")), "\n"]
    vocab = {token: i for i, token in enumerate([*specials, *chars])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=TinyModelSpec.max_positions,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, spec: TinyModelSpec) -> LlamaForCausalLM:
    """A randomly initialised Llama model sized by `spec`, seeded for repeatability."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_model(out_dir: Path, spec: TinyModelSpec | None = None) -> Path:
    """Build a tiny model and tokenizer and save both to `out_dir` with `save_pretrained`."""
    spec = spec or TinyModelSpec()
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
