from shipyard.demo import arithmetic
from shipyard.demo.arithmetic import Problem


def test_held_out_split_is_disjoint_from_training_samples() -> None:
    train = set(arithmetic.sample_problems(2000, seed=0))
    held = set(arithmetic.sample_problems(500, seed=0, held_out=True))
    assert train.isdisjoint(held)
    assert all(arithmetic.is_held_out(p) for p in held)


def test_held_out_split_does_not_correlate_with_digits() -> None:
    held = arithmetic.sample_problems(500, seed=0, held_out=True)
    assert len({p.a % 10 for p in held}) == 10
    assert len({p.b % 10 - p.a % 10 for p in held}) > 10


def test_samples_are_deterministic_per_seed() -> None:
    assert arithmetic.sample_problems(20, seed=5) == arithmetic.sample_problems(20, seed=5)
    assert arithmetic.sample_problems(20, seed=5) != arithmetic.sample_problems(20, seed=6)


def test_rewards() -> None:
    problem = Problem(12, 35)
    assert problem.answer == "47"
    assert arithmetic.exact_reward(" 47", problem.answer) == 1.0
    assert arithmetic.exact_reward("47 apples", problem.answer) == 0.0
    assert arithmetic.format_reward("48") == arithmetic.FORMAT_REWARD
    assert arithmetic.format_reward("forty-seven") == 0.0


def test_trl_reward_shapes_accept_plain_and_conversational_completions() -> None:
    completions: list = ["47", [{"role": "assistant", "content": "46"}]]
    assert arithmetic.trl_exact_reward(completions, answer=["47", "47"]) == [1.0, 0.0]
    assert arithmetic.trl_format_reward(completions) == [arithmetic.FORMAT_REWARD] * 2
