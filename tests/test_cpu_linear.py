"""Prepacked oneDNN bf16 linears give the same logits as plain bf16 linears and keep the weights tied."""

from __future__ import annotations

import pytest
import torch

from engine.model.cpu_linear import PackedLinear, pack_linears, packed_linear_available
from engine.model.tinyslm import TinySLM
from tests.test_model import CFG

pytestmark = pytest.mark.skipif(not packed_linear_available(), reason="CPU lacks native bf16 (AVX512-BF16/AMX)")


def test_packed_model_matches_plain_bf16():
    torch.manual_seed(0)
    model = TinySLM(CFG).to(torch.bfloat16).eval()
    idx = torch.randint(0, CFG.vocab_size, (2, 9))
    with torch.inference_mode():
        plain = model(idx).float()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        assert pack_linears(model) == 1 + 4 * CFG.n_layer  # wqkv, wo, w13, w2 per layer + output
        packed = model(idx).float()
    assert isinstance(model.output, PackedLinear)
    assert model.output.weight is model.tok_embeddings.weight
    assert model.state_dict().keys() == state.keys()
    torch.testing.assert_close(packed, plain, atol=2e-2, rtol=2e-2)
