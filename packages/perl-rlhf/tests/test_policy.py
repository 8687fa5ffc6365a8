"""RL on one base: every algorithm's iteration, the shared rollout path, logging and plotting,
and a tiny policy that learns a rule."""

import pytest
import torch
from perl_rlhf import LoraSpec, PerlError, PerlModel, PolicyConfig, PolicyTrainer, plot_log
from perl_rlhf.policy import compute_advantages
from perl_rlhf.rollout import response_mask
from perl_testlib import tiny

PROMPTS = [{"prompt": p} for p in ("hi:", "go:", "say:", "ok:", "yes:", "now:")]


def count_x(prompts, responses):
    return [r.count("x") / max(1, len(r)) for r in responses]


def test_response_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 6, 1, 7, 1], [1, 5, 5, 5, 5], [5, 5, 5, 5, 5]])
    want = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(response_mask(ids, [1]), want)


@pytest.mark.parametrize(
    ("algorithm", "kl_mode", "k"),
    [
        ("reinforce", "token", 1),
        ("reinforce", "sequence", 1),
        ("rloo", "token", 2),
        ("ppo", "token", 1),
    ],
)
def test_one_iteration_of_each_algorithm(algorithm, kl_mode, k):
    base, tok = tiny()
    roles = ("policy", "value", "reward") if algorithm != "rloo" else ("policy", "reward")
    model = PerlModel(base, roles=roles, lora=LoraSpec(rank=2), tokenizer=tok)
    cfg = PolicyConfig(
        algorithm=algorithm, kl_mode=kl_mode, samples_per_prompt=k, batch_size=3, steps=2,
        max_new_tokens=6, temperature=1.0, whiten_rewards=True, reward_clip=2.0, lr=1e-2,
    )  # fmt: skip
    trainer = PolicyTrainer(model, tok, PROMPTS, config=cfg, true_reward_fn=count_x)
    reward_before = [p.detach().clone() for p in model.role_parameters("reward")]
    rows = [trainer.step(), trainer.step()]
    for key in ("reward", "kl", "entropy", "response_length", "true_reward", "seconds"):
        assert key in rows[0]
    # Step 0: LoRA B = 0, so the policy is the reference and the KL is exactly 0.
    assert rows[0]["kl"] == 0.0
    assert rows[1]["kl"] != 0.0
    assert 1 <= rows[0]["response_length"] <= 6
    # The reward adapter and head are frozen during RL.
    for a, b in zip(reward_before, model.role_parameters("reward"), strict=True):
        assert torch.equal(a, b)


def test_rollout_uses_one_base_for_every_role():
    base, tok = tiny()
    model = PerlModel(base, lora=LoraSpec(rank=2), tokenizer=tok)
    seen = set()
    for role in ("policy", "reference", "value", "reward"):
        with model.use(role) as lm:
            seen.add(id(lm))
    assert len(seen) == 1
    cfg = PolicyConfig(batch_size=2, max_new_tokens=4)
    trainer = PolicyTrainer(model, tok, PROMPTS, config=cfg)
    rollout, _, _ = trainer.make_rollout([0, 1])
    assert rollout.values is not None and rollout.scores is not None
    assert rollout.logprobs is not None and rollout.ref_logprobs is not None
    assert rollout.logprobs.shape == rollout.ref_logprobs.shape == rollout.response_ids.shape
    assert torch.equal(rollout.logprobs, rollout.ref_logprobs)  # LoRA B = 0 at the start


def test_advantages_follow_the_algorithm():
    base, tok = tiny()
    model = PerlModel(base, roles=("policy", "value"), lora=LoraSpec(rank=2), tokenizer=tok)
    trainer = PolicyTrainer(
        model, tok, PROMPTS, config=PolicyConfig(batch_size=4, max_new_tokens=4), reward_fn=count_x
    )
    rollout, _, _ = trainer.make_rollout([0, 1, 2, 3])
    rollout.scores = torch.tensor([1.0, 0.0, 3.0, 2.0])
    assert rollout.ref_logprobs is not None and rollout.values is not None
    rollout.logprobs = rollout.ref_logprobs + 0.1
    mask = rollout.response_mask.float()
    out = compute_advantages(rollout, PolicyConfig(algorithm="reinforce", beta=0.5))
    # (1 - beta) * score at the end, -beta * 0.1 per token, minus the value baseline
    want_total = 0.5 * rollout.scores - 0.5 * 0.1 * mask.sum(1)
    assert torch.allclose(out["returns"][:, 0], want_total, atol=1e-5)
    assert torch.allclose(out["advantages"], (out["returns"] - rollout.values) * mask, atol=1e-6)
    rloo = compute_advantages(
        rollout, PolicyConfig(algorithm="rloo", samples_per_prompt=2, beta=0.5)
    )
    a = rloo["advantages"][:, 0]
    assert torch.allclose(a[0], -a[1]) and torch.allclose(a[2], -a[3])


@pytest.mark.parametrize("algorithm", ["reinforce", "rloo", "ppo"])
def test_update_raises_the_likelihood_of_better_samples(algorithm):
    """One update on a fixed rollout: the best-scored response becomes more likely and the
    worst less likely (the sign and wiring of every algorithm's gradient)."""
    torch.manual_seed(0)
    base, tok = tiny()
    roles = ("policy", "value") if algorithm != "rloo" else ("policy",)
    model = PerlModel(base, roles=roles, lora=LoraSpec(rank=4), tokenizer=tok)
    cfg = PolicyConfig(
        algorithm=algorithm, samples_per_prompt=4, batch_size=1, lr=1e-2, max_new_tokens=5,
        temperature=1.0, beta=0.0, ppo_epochs=1, whiten_advantages=False,
    )  # fmt: skip
    trainer = PolicyTrainer(model, tok, PROMPTS, config=cfg, reward_fn=count_x)
    rollout, _, _ = trainer.make_rollout([0])
    rollout.scores = torch.tensor([2.0, 0.0, 0.0, -2.0])
    p_len = rollout.prompt_ids.shape[1]
    from perl_rlhf.rollout import token_logprobs

    def seq_logp():
        with torch.no_grad():
            lp, _ = token_logprobs(
                model, "policy", rollout.input_ids, rollout.attention_mask, p_len
            )
        return (lp * rollout.response_mask).sum(1)

    before = seq_logp()
    trainer.update(rollout)
    change = seq_logp() - before
    assert change[0] > 0 > change[3], change


def test_plot_and_bad_configs(tmp_path):
    hist = [
        {
            "step": i,
            "reward": 0.1 * i,
            "true_reward": 0.2,
            "kl": 0.01 * i,
            "entropy": 2.0,
            "response_length": 5,
        }
        for i in range(4)
    ]
    path = plot_log(hist, tmp_path / "log.png")
    assert path.stat().st_size > 1000
    with pytest.raises(PerlError, match="RLOO needs samples_per_prompt"):
        PolicyConfig(algorithm="rloo")
    with pytest.raises(PerlError, match="algorithm must be"):
        PolicyConfig(algorithm="dpo")
    base, tok = tiny()
    model = PerlModel(base, roles=("policy",), lora=LoraSpec(rank=2), tokenizer=tok)
    with pytest.raises(PerlError, match="needs a value role"):
        PolicyTrainer(model, tok, PROMPTS, config=PolicyConfig(), reward_fn=count_x)
    with pytest.raises(PerlError, match="no reward"):
        PolicyTrainer(
            model, tok, PROMPTS, config=PolicyConfig(algorithm="rloo", samples_per_prompt=2)
        )
    with pytest.raises(PerlError, match="over the context limit"):
        PolicyTrainer(
            model, tok, [{"prompt": "a" * 120}], reward_fn=count_x,
            config=PolicyConfig(algorithm="rloo", samples_per_prompt=2, max_new_tokens=16),
        )  # fmt: skip


def test_evaluate_rule_on_held_out_prompts_gives_mean_and_standard_error():
    base, tok = tiny()
    model = PerlModel(base, roles=("policy", "reward"), lora=LoraSpec(rank=2), tokenizer=tok)
    cfg = PolicyConfig(algorithm="rloo", samples_per_prompt=2, batch_size=2, max_new_tokens=5)
    trainer = PolicyTrainer(model, tok, PROMPTS, config=cfg)
    seen: list[str] = []

    def rule(prompts, responses):
        seen.extend(prompts)
        return [float(i % 2) for i in range(len(responses))]

    held_out = [{"prompt": "held:"}, {"prompt": "out:"}, {"prompt": "new:"}]
    out = trainer.evaluate_rule(rule, prompts=held_out, samples=3)
    # 3 prompts x 3 samples, in chunks of batch_size x samples_per_prompt = 4 (values 0,1,0,1 |
    # 0,1,0,1 | 0): mean 4/9, standard error = sample std / sqrt(9).
    assert out["n"] == 9.0 and sorted(set(seen)) == ["held:", "new:", "out:"]
    vals = torch.tensor([0.0, 1, 0, 1, 0, 1, 0, 1, 0])
    assert out["mean"] == pytest.approx(4 / 9)
    assert out["stderr"] == pytest.approx(float(vals.std() / 3))
    assert trainer.evaluate(rule, prompts=held_out, n=1) == 0.0  # one sample of "held:"
    # Same seed, same samples: evaluation is repeatable, and it leaves the global generator (the
    # training samples' source) where it was.
    state = torch.random.get_rng_state()
    again = trainer.evaluate_rule(rule, prompts=held_out, samples=3)
    assert again == out
    assert torch.equal(torch.random.get_rng_state(), state)
