"""GPU-only checks (marked `gpu`: skipped where there is no CUDA): CUDA-graph decode and bf16 training.

The CPU suite covers the same code paths; these catch what only a GPU exercises: CUDA graphs
(`mode="reduce-overhead"`), bf16 autocast with fused AdamW, the flash SDPA kernels.
"""

from __future__ import annotations

import pytest
import torch

from engine.generate import Generator
from engine.sampling import SamplingParams
from tests.conftest import tiny_train_config

pytestmark = pytest.mark.gpu


def test_cuda_graph_decode_matches_eager(tiny_model, tiny_tokenizer):
    model = tiny_model.to("cuda")
    params = SamplingParams(max_new_tokens=100, temperature=0, stop_at_eos=False)
    prompt = tiny_tokenizer.encode("Once upon a time")
    eager = [ids.clone() for ids, _ in Generator(model, tiny_tokenizer).tokens(prompt, params)]
    compiled = Generator(model, tiny_tokenizer, compile=True)
    got = [ids.clone() for ids, _ in compiled.tokens(prompt, params)]
    assert compiled.compile_failed is None, compiled.compile_failed
    assert torch.equal(torch.cat(eager), torch.cat(got))


def test_bf16_compiled_training_on_cuda_learns(prepared_dir, tmp_path):
    from tests.fakes import read_events
    from trainer.train import run_training

    cfg = tiny_train_config(prepared_dir, tmp_path / "run", device="cuda", dtype="bfloat16", compile=True)
    assert run_training(cfg.with_(max_steps=60, eval_interval=30)) == 0
    events = read_events(tmp_path / "run" / "events.jsonl")
    start = events[0]
    assert start["device"].startswith("cuda") and start["dtype"] == "bfloat16" and start["compiled"] is True
    vals = [e["val_loss"] for e in events if e["event"] == "eval"]
    assert vals[-1] < vals[0]
    assert not any(e["event"] == "log" and "compile failed" in e["message"] for e in events)
