"""The native decode runtime with one position per row (a server's rows, which joined at different times): each
row's logits are the torch path's for that row (float32: the same greedy tokens; bf16: within a rounding), a row's
logits do not depend on the other rows, and bad positions are one clear error."""

from __future__ import annotations

import pytest
import torch

from engine.model import native
from engine.model.tinyslm import TinySLM
from tests.test_native_runtime import GQA, ODD, SHAPES, build, runnable

PROMPTS = (2, 5, 9, 14)  # the rows' prompt lengths: each row decodes at its own position
STEPS = 24  # ODD's rows pass its ring of 16 slots (and stay inside its context of 40)


def prefilled(model: TinySLM, rows: int, capacity: int) -> None:
    """A cache of `capacity` rows whose first `rows` rows hold prompts of PROMPTS' lengths, each prefilled alone."""
    model.setup_cache(capacity)
    torch.manual_seed(2)
    for i, length in enumerate(PROMPTS[:rows]):
        ids = torch.randint(0, model.config.vocab_size, (1, length))
        model(ids, torch.arange(length), rows=slice(i, i + 1))


def torch_step(model: TinySLM, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The torch path's decode step of the first B rows, each at its own position: logits (B, V)."""
    return model(tokens, positions[:, None], rows=slice(0, tokens.size(0)))[:, -1]


@pytest.mark.parametrize("portable", [False, True])  # the vector kernels, the portable C path
@pytest.mark.parametrize("shape", SHAPES)
def test_each_row_at_its_own_position_is_the_torch_path_for_that_row(shape, portable, one_thread):
    runnable()
    model, reference = build(SHAPES[shape], "float32"), build(SHAPES[shape], "float32")
    decoder = native.native_decoder(model)
    assert decoder is not None
    decoder = native.NativeDecoder(model, decoder.lib, scalar=True) if portable else decoder
    rows = len(PROMPTS)
    with torch.inference_mode():
        prefilled(model, rows, rows + 1)  # a cache with a free row, as a server's
        prefilled(reference, rows, rows + 1)
        positions = torch.tensor(PROMPTS)
        tokens = torch.tensor([[3], [4], [5], [6]])
        picked = set()
        for _ in range(STEPS):
            got, want = decoder.step(tokens, positions), torch_step(reference, tokens, positions)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            assert torch.equal(got.argmax(-1), want.argmax(-1))
            tokens, positions = want.argmax(-1, keepdim=True), positions + 1
            picked.update(tokens.flatten().tolist())
    assert len(picked) > 8  # the rows tell stories, not one token repeated


@pytest.mark.parametrize("weights", ["float32", "bf16", "int8-vnni"])
def test_a_rows_logits_do_not_depend_on_the_other_rows(weights, one_thread):
    """Row r in a batch of rows at other positions gives bit for bit the logits it gives alone: a seeded story
    does not depend on what else a server decodes beside it (bf16 and int8 activations included)."""
    runnable()
    batch, alone = build(ODD, weights), build(ODD, weights)
    decoder, solo = native.native_decoder(batch), native.native_decoder(alone)
    tokens = torch.tensor([[3], [4], [5], [6]])
    with torch.inference_mode():
        prefilled(batch, 4, 4)
        together = [decoder.step(tokens, torch.tensor(PROMPTS) + k) for k in range(STEPS)]
        for r, length in enumerate(PROMPTS):
            prefilled(alone, 4, 4)  # the same prompts; only row r decodes, in a batch of one
            for layer in alone.layers:  # row r's prompt into row 0, where a batch of one decodes
                layer.attn.cache.k[0].copy_(layer.attn.cache.k[r])
                layer.attn.cache.v[0].copy_(layer.attn.cache.v[r])
            for k in range(STEPS):
                assert torch.equal(solo.step(tokens[r : r + 1], length + k)[0], together[k][r]), (r, k)


@pytest.mark.parametrize("shape, ulps", [("odd", 2), ("gqa", 2)])
def test_bf16_rows_are_within_a_bf16_rounding_of_the_torch_path(shape, ulps, one_thread):
    runnable()
    from engine.model.cpu_kernels import use_cpu_kernels

    model, reference = build(SHAPES[shape], "bf16", std=0.1), build(SHAPES[shape], "bf16", std=0.1)
    use_cpu_kernels(reference, min_params=0)  # Helium's bf16 matmuls, as models over 20M parameters decode
    decoder = native.native_decoder(model)
    with torch.inference_mode():
        prefilled(model, 4, 4)
        prefilled(reference, 4, 4)
        positions, tokens = torch.tensor(PROMPTS), torch.tensor([[3], [4], [5], [6]])
        for _ in range(STEPS):
            got, want = decoder.step(tokens, positions).float(), torch_step(reference, tokens, positions).float()
            assert (got - want).abs().max() <= want.abs().max() * ulps * 2**-7  # bf16 ulps of the largest logit
            tokens, positions = want.argmax(-1, keepdim=True), positions + 1


def test_bad_positions_are_one_clear_error(one_thread):
    runnable()
    model = build(GQA, "float32")
    decoder = native.native_decoder(model)
    model.setup_cache(3)
    with torch.inference_mode():
        assert decoder.step(torch.tensor([[1], [2]]), torch.tensor([0, 4])).shape == (2, 300)  # 2 of 3 rows
        with pytest.raises(ValueError, match="3 positions for 2 rows"):
            decoder.step(torch.tensor([[1], [2]]), torch.tensor([0, 1, 2]))
        with pytest.raises(ValueError, match="position 48 is past the KV cache's 48 slots"):
            decoder.step(torch.tensor([[1], [2]]), torch.tensor([3, 48]))
        with pytest.raises(ValueError, match="position -1 outside the model's context"):
            decoder.step(torch.tensor([[1], [2]]), torch.tensor([-1, 3]))
        with pytest.raises(ValueError, match="4 rows for a KV cache of 3"):
            decoder.step(torch.tensor([[1]] * 4), 0)
