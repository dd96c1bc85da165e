"""The masked path's confidence decoders against LLaDA's algorithm, written down here from the
paper's description (Nie et al. 2025, Alg. 4-5 and section B.3; the public ``generate.py`` for its
constants), independently of ``simplexdiff.samplers``: greedy tokens (temperature 0), the number
of reveals per step split evenly with the remainder first, low-confidence remasking by the
model's own probability, and semi-autoregressive blocks counted from the end of the prompt."""

import pytest
import torch

import simplexdiff as sd
from simplexdiff.samplers import SAMPLERS, sample

V = 6


class Toy:
    """A deterministic denoiser whose logits depend on the state (so reveal order matters)."""

    def __init__(self, length: int, mask_id: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.base = 3 * torch.randn(length, V, generator=g, dtype=torch.float64)
        self.coupling = torch.randn(length, V, V + 1, generator=g, dtype=torch.float64)
        self.mask_id = mask_id

    def __call__(self, ids: torch.Tensor, t=None) -> torch.Tensor:
        # each position's logits shift with the token (or MASK) at the previous position
        prev = torch.cat([torch.full_like(ids[:, :1], self.mask_id), ids[:, :-1]], 1)
        shift = self.coupling[torch.arange(ids.shape[1]), :, :][None].expand(len(ids), -1, -1, -1)
        picked = shift.gather(-1, prev[:, :, None, None].expand(-1, -1, V, 1)).squeeze(-1)
        return (self.base[None] + picked).float()


def evenly(n: int, steps: int) -> list[int]:
    """``n`` reveals over ``steps`` steps, the remainder one each in the first steps."""
    return [n // steps + (1 if i < n % steps else 0) for i in range(steps)]


def llada(toy: Toy, prompt: list[int], gen: int, steps: int, block: int, threshold=None):
    """Every state of LLaDA's decoding (batch of one, temperature 0): with ``threshold``,
    Fast-dLLM's parallel decoding instead of a fixed number of reveals per step."""
    mask = toy.mask_id
    x = torch.tensor([prompt + [mask] * gen])
    states = [x.clone()]
    blocks = gen // block
    per_block = steps // blocks
    for b in range(blocks):
        lo, hi = len(prompt) + b * block, len(prompt) + (b + 1) * block
        quota = evenly(int((x[0, lo:hi] == mask).sum()), per_block)
        for i in range(per_block):
            open_ = [j for j in range(lo, hi) if x[0, j] == mask]
            if open_:
                logits = toy(x)[0].double()
                best = logits.argmax(-1)
                p = torch.softmax(logits, -1).gather(-1, best[:, None]).squeeze(-1)
                ranked = sorted(open_, key=lambda j: -float(p[j]))
                if threshold is None:
                    chosen = ranked[: quota[i]]
                elif i == per_block - 1:
                    chosen = ranked
                else:
                    chosen = [j for j in ranked if p[j] >= threshold] or ranked[:1]
                for j in chosen:
                    x[0, j] = best[j]
            states.append(x.clone())
    return states


CASES = [  # (sampler, prompt, generated, steps, block_length, options)
    ("remask", [1, 4, 2], 9, 4, 9, {}),
    ("remask", [], 8, 8, 8, {}),
    ("semi_ar", [1, 4, 2], 12, 6, 4, {"block_length": 4}),
    ("semi_ar", [5], 8, 8, 2, {"block_length": 2}),
    ("confidence", [3, 3], 10, 5, 10, {"threshold": 0.6}),
]


@pytest.mark.parametrize("sampler, prompt, gen, steps, block, options", CASES)
def test_reveal_order_matches_llada_step_by_step(sampler, prompt, gen, steps, block, options):
    path = sd.paths.build("masked", vocab_size=V)
    toy = Toy(len(prompt) + gen, path.mask_id)
    out = sample(
        toy, path, 1, len(prompt) + gen, steps, sampler,
        prompt=torch.tensor(prompt, dtype=torch.long) if prompt else None, temperature=0.0,
        return_trajectory=True, generator=torch.Generator().manual_seed(3), **options,
    )  # fmt: skip
    threshold = options.get("threshold")
    reference = llada(toy, prompt, gen, steps, block, threshold)
    assert len(out.trajectory) == len(reference) == steps + 1
    for i, (ours, theirs) in enumerate(zip(out.trajectory, reference, strict=True)):
        assert torch.equal(ours, theirs), f"step {i}: {ours.tolist()} vs {theirs.tolist()}"


def changes(states: list[torch.Tensor]) -> list[list]:
    """The distinct successive states (steps that change nothing left out)."""
    return [s.tolist() for i, s in enumerate(states) if i == 0 or not torch.equal(s, states[i - 1])]


def test_semi_ar_blocks_start_after_each_rows_prompt():
    """Prompts of different lengths in one batch: each row's blocks start after its own prompt."""
    path = sd.paths.build("masked", vocab_size=V)
    toy = Toy(10, path.mask_id)
    prompts = [torch.tensor([1, 2]), torch.tensor([4, 4, 4, 4])]
    out = sample(toy, path, 2, 10, 8, "semi_ar", prompt=prompts, temperature=0.0,
                 block_length=2, return_trajectory=True)  # fmt: skip
    for row, prompt in enumerate(prompts):
        ref = llada(toy, prompt.tolist(), 10 - len(prompt), 8 if len(prompt) == 2 else 6, 2)
        ours = [s[row : row + 1] for s in out.trajectory]
        # the longer prompt leaves 3 blocks for the 4 of the shorter one: its last block's 2 steps
        # change nothing
        assert changes(ours) == changes(ref)
        assert torch.equal(out.tokens[row, : len(prompt)], prompt)


def test_rank_by_random_is_llada_random_remasking():
    path = sd.paths.build("masked", vocab_size=V)
    toy = Toy(12, path.mask_id)
    runs = [
        sample(
            toy,
            path,
            1,
            12,
            6,
            "remask",
            temperature=0.0,
            rank_by="random",
            return_trajectory=True,
            generator=torch.Generator().manual_seed(s),
        )  # fmt: skip
        for s in (0, 1)
    ]
    orders = [[(t != path.mask_id).sum().item() for t in r.trajectory] for r in runs]
    assert orders[0] == orders[1] == [0, 2, 4, 6, 8, 10, 12]  # the same quotas
    revealed = [[(t != path.mask_id)[0] for t in r.trajectory] for r in runs]
    assert any(not torch.equal(a, b) for a, b in zip(*revealed, strict=True))  # other positions
    with pytest.raises(sd.errors.ConfigError, match="unknown rank_by"):
        sample(toy, path, 1, 12, 6, "remask", rank_by="bogus")


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_temperature_zero_is_greedy_for_every_sampler(sampler):
    """Position-wise fixed logits: at temperature 0 every sampler returns each position's argmax,
    whatever the seed."""
    logits = torch.randn(8, V, generator=torch.Generator().manual_seed(1)) * 2

    def fixed(inputs, t):
        return logits[None].expand(inputs.shape[0], -1, -1)

    fixed.time_conditioned = False  # for "cached"
    for name in sd.paths.available():
        path = sd.paths.build(name, vocab_size=V)
        if not SAMPLERS.build(sampler).fits(path):
            continue
        opts = {"block_length": 4} if sampler == "semi_ar" else {}
        for seed in (0, 1):
            out = sample(fixed, path, 3, 8, 8, sampler, temperature=0.0,
                         generator=torch.Generator().manual_seed(seed), **opts)  # fmt: skip
            assert torch.equal(out.tokens, logits.argmax(-1).expand(3, -1)), (sampler, name)


def test_semi_ar_stops_at_eos_and_decoding_cuts_there():
    """A denoiser sure of token 1 everywhere but of EOS at one position of the first block: with
    ``eos_id`` the later blocks become EOS without a denoiser call; without, every step calls."""
    tok = sd.data.CharTokenizer("abcde", [sd.data.EOS])  # ids 0-4, EOS 5: V = 6
    path = sd.paths.build("masked", vocab_size=V)
    prompt, gen, block, eos_at = [0, 2, 4], 24, 8, 3 + 5
    logits = torch.full((3 + gen, V), -4.0)
    logits[:, 1] = 4.0
    logits[eos_at] = -4.0
    logits[eos_at, tok.eos_id] = 4.0

    def denoiser(ids, t):
        return logits.expand(len(ids), -1, -1)

    def run(**options):
        return sample(
            denoiser, path, 2, 3 + gen, 24, "semi_ar", prompt=torch.tensor(prompt),
            temperature=0.0, block_length=block, **options,
        )  # fmt: skip

    plain, stopped = run(), run(eos_id=tok.eos_id)
    assert plain.nfe == 24 and stopped.nfe == 8  # one block of 8 steps, then nothing to do
    assert torch.equal(plain.tokens[:, : eos_at + 1], stopped.tokens[:, : eos_at + 1])
    # the EOS's own block is finished as usual (LLaDA does not stop inside a block); every later
    # position is EOS
    assert (stopped.tokens[:, eos_at + 1 : 3 + block] == 1).all()
    assert (stopped.tokens[:, 3 + block :] == tok.eos_id).all()
    assert (plain.tokens[:, eos_at + 1 :] == 1).all()
    assert tok.decode(stopped.tokens, until_eos=True) == ["aceb" + "b" * 4] * 2
    assert tok.decode(plain.tokens[0]).endswith(sd.data.EOS + "b" * (gen - 6))
