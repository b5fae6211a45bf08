"""GPU-only checks (marked `gpu`: skipped where there is no CUDA): CUDA-graph decode, bf16 training, the kernels.

The CPU suite covers the same code paths; these catch what only a GPU exercises: CUDA graphs
(`mode="reduce-overhead"`), bf16 autocast with fused AdamW, the flash SDPA kernels, page-locked batches and a
training step with no host synchronization. `scripts/gpu_check.sh` runs them first (with the windowed-attention
kernel check in tests/test_sliding_window.py).
"""

from __future__ import annotations

import pytest
import torch

from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model.attention import causal_attention
from engine.model.config import get_preset
from engine.model.tinyslm import TinySLM
from tests.conftest import TINY, tiny_train_config
from trainer.loss import NextTokenLoss
from trainer.optim import make_optimizer

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


def test_cuda_graph_decode_of_a_batch_matches_eager(tiny_model, tiny_tokenizer):
    model = tiny_model.to("cuda")
    params = SamplingParams(max_new_tokens=80, temperature=0, stop_at_eos=False)
    prompt = tiny_tokenizer.encode("Once upon a time")
    eager = torch.stack([ids.clone() for ids, _ in Generator(model, tiny_tokenizer).tokens(prompt, params, 4)])
    compiled = Generator(model, tiny_tokenizer, compile=True)
    got = torch.stack([ids.clone() for ids, _ in compiled.tokens(prompt, params, 4)])
    assert compiled.compile_failed is None, compiled.compile_failed
    assert torch.equal(eager, got)  # (steps, 4): every row of the CUDA graph's batch decodes as eager does


def test_compiled_bf16_training_steps_equal_eager_within_bf16_tolerance():
    cfg = TINY.with_(context_length=128)
    torch.manual_seed(0)
    eager_model = TinySLM(cfg).cuda().train()
    compiled_model = TinySLM(cfg).cuda().train()
    compiled_model.load_state_dict(eager_model.state_dict())
    runs = []
    for model, compile in ((eager_model, False), (compiled_model, True)):
        loss_fn = NextTokenLoss(model, torch.bfloat16)
        loss_fn = torch.compile(loss_fn) if compile else loss_fn
        optimizer = make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), torch.device("cuda"))
        gen = torch.Generator(device="cuda").manual_seed(1)
        losses = []
        for _ in range(5):
            tokens = torch.randint(0, cfg.vocab_size, (8, cfg.context_length + 1), device="cuda", generator=gen)
            loss = loss_fn(tokens[:, :-1], tokens[:, 1:])
            loss.backward()
            grads = torch.cat([p.grad.flatten().float() for p in model.parameters()])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        runs.append((torch.tensor(losses), grads))
    (eager_losses, eager_grads), (compiled_losses, compiled_grads) = runs
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=2e-2, atol=2e-2)
    assert torch.nn.functional.cosine_similarity(compiled_grads, eager_grads, dim=0) > 0.99  # after 4 steps


def test_nano_training_attention_runs_on_the_flash_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    nano = get_preset("nano")
    q, k, v = (torch.randn(4, nano.n_head, nano.context_length, nano.head_dim, device="cuda", dtype=torch.bfloat16)
               for _ in range(3))  # fmt: skip
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if flash cannot take this call
        out = causal_attention(q, k, v, nano.sliding_window)
    ref = causal_attention(q.float(), k.float(), v.float(), nano.sliding_window)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_loader_batches_are_page_locked_and_equal_the_plain_ones(prepared_dir):
    from trainer.loader import TokenLoader

    plain = TokenLoader(prepared_dir, "train", 4, 32).batch(3)
    pinned = TokenLoader(prepared_dir, "train", 4, 32, pin_memory=True).batch(3)
    for a, b in zip(plain, pinned, strict=True):
        assert b.is_pinned() and b.is_contiguous() and torch.equal(a, b)


def test_a_compiled_training_step_never_waits_for_the_gpu(prepared_dir, tmp_path):
    """Steps between log points queue work without a host sync (no .item(), float() or bool() of a tensor)."""
    from trainer.distributed import Dist
    from trainer.train import Trainer

    cfg = tiny_train_config(prepared_dir, tmp_path / "run", device="cuda", dtype="bfloat16", compile=True)
    trainer = Trainer(cfg, "new", Dist())
    try:
        trainer.setup()
        trainer.first_step(0)  # compiles (compilation may synchronize)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(1, 4):
                trainer.train_step(step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert trainer.compiled
    finally:
        trainer.report.close()
