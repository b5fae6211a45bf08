"""The compiled decode step (real torch.compile, Inductor with weight freezing on CPU) matches eager."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine.generation.generate import Generator
from engine.generation.runtime import CompiledFn
from engine.generation.sampling import SamplingParams
from engine.model.tinyslm import TinySLM

pytestmark = pytest.mark.usefixtures("torch_decode")  # these test the PyTorch decode path

@pytest.mark.parametrize("attention_window", [None, 8])
@pytest.mark.slow
def test_compiled_decode_matches_eager_through_the_sliding_window(
    attention_window, tiny_model, tiny_tokenizer, one_thread
):
    # 100 new tokens outgrow the 64-token context: the window slides (an eager prefill) and decoding goes on;
    # with an 8-token attention window the KV cache is a ring of 8 slots, overwritten again and again
    if attention_window is not None:
        state = tiny_model.state_dict()
        tiny_model = TinySLM(replace(tiny_model.config, sliding_window=attention_window)).eval()
        tiny_model.load_state_dict(state)
    params = SamplingParams(max_new_tokens=100, temperature=0, stop_at_eos=False)
    prompt = tiny_tokenizer.encode("Once upon a time")
    eager = Generator(tiny_model, tiny_tokenizer)
    compiled = Generator(tiny_model, tiny_tokenizer, compile=True)
    want = [(ids.clone(), logits.clone()) for ids, logits in eager.tokens(prompt, params)]
    got = [(ids.clone(), logits.clone()) for ids, logits in compiled.tokens(prompt, params)]
    assert compiled.compile_failed is None, compiled.compile_failed  # it really ran compiled
    assert compiled._decode.compiled is not None  # (not frozen on CPU: engine.generation.runtime.FREEZE_WEIGHTS_ON_CPU)
    assert len(got) == len(want) == 100
    for (ids_w, logits_w), (ids_g, logits_g) in zip(want, got, strict=True):
        assert torch.equal(ids_w, ids_g)
        torch.testing.assert_close(logits_g, logits_w, rtol=1e-4, atol=1e-4)
    # freezing is scoped to the decode step: torch's global config (which the trainer compiles under) is untouched
    import torch._inductor.config as inductor_config

    assert inductor_config.freezing is False


def test_a_failing_compile_falls_back_to_eager():
    def step(x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fullgraph=True cannot trace it
            return x + 1
        return x - 1

    fn = CompiledFn(step, torch.device("cpu"))
    with torch.inference_mode():
        assert torch.equal(fn(torch.ones(3)), torch.full((3,), 2.0))
    assert fn.failed and fn.compiled is None
    assert torch.equal(fn(-torch.ones(3)), torch.full((3,), -2.0))  # later calls run eager


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=100, temperature=0, repetition_penalty=1.2, stop_at_eos=False),
        SamplingParams(max_new_tokens=100, temperature=0.9, top_k=40, top_p=0.9, seed=5, stop_at_eos=False),
    ],
    ids=["greedy", "sampled"],
)
@pytest.mark.slow
def test_compiled_step_with_sampling_inside_matches_eager(params, tiny_model, tiny_tokenizer, one_thread):
    # the step CUDA graphs run (penalty, temperature, top-k, top-p and the draw inside the graph), here compiled
    # by Inductor on the CPU: the same tokens as the same step run eagerly, noise drawn from the same seed
    prompt = tiny_tokenizer.encode("Once upon a time")
    eager = Generator(tiny_model, tiny_tokenizer, fused_sampling=True)
    compiled = Generator(tiny_model, tiny_tokenizer, compile=True, fused_sampling=True)
    want = [(ids.clone(), logits.clone()) for ids, logits in eager.tokens(prompt, params)]
    got = [(ids.clone(), logits.clone()) for ids, logits in compiled.tokens(prompt, params)]
    assert compiled.compile_failed is None, compiled.compile_failed
    assert len(got) == len(want) == 100
    for (ids_w, logits_w), (ids_g, logits_g) in zip(want, got, strict=True):
        assert torch.equal(ids_w, ids_g)
        torch.testing.assert_close(logits_g, logits_w, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=100, temperature=0, repetition_penalty=1.2, stop_at_eos=False),
        SamplingParams(max_new_tokens=100, temperature=0.9, top_k=40, top_p=0.9, seed=5, stop_at_eos=False),
    ],
    ids=["greedy", "sampled"],
)
def test_cuda_graph_decode_samples_inside_the_graph(params, tiny_model, tiny_tokenizer):
    # on CUDA, compile means CUDA graphs (mode="reduce-overhead") with sampling inside them by default: every
    # token is one replay, the position stays on the device, and the story equals the same step run eagerly
    from torch._dynamo.utils import counters

    model = tiny_model.to("cuda")
    prompt = tiny_tokenizer.encode("Once upon a time")
    eager = Generator(model, tiny_tokenizer, fused_sampling=True)
    want = [(ids.clone(), logits.clone()) for ids, logits in eager.tokens(prompt, params)]
    compiled = Generator(model, tiny_tokenizer, compile=True)
    assert compiled.fused and compiled._pos.is_cuda
    skips = counters["inductor"]["cudagraph_skips"]
    compiled.warm_up()
    got = [(ids.clone(), logits.clone()) for ids, logits in compiled.tokens(prompt, params)]
    again = [ids.clone() for ids, _ in compiled.tokens(prompt, params)]  # replays, outputs copied out each token
    assert compiled.compile_failed is None, compiled.compile_failed
    assert counters["inductor"]["cudagraph_skips"] == skips  # the step really ran as a CUDA graph
    assert len(got) == len(want) == 100
    for (ids_w, logits_w), (ids_g, logits_g) in zip(want, got, strict=True):
        assert torch.equal(ids_w, ids_g)
        torch.testing.assert_close(logits_g, logits_w, rtol=1e-3, atol=1e-3)
    assert torch.equal(torch.cat(again), torch.cat([ids for ids, _ in got]))
