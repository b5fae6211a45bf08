"""Look inside a model: one forward pass that keeps attention, the residual stream and each head's output
(`run_with_cache`), the logit lens, direct logit attribution, and head knock-outs. Torch only, no UI."""

from engine.inspect.attribution import (
    Attribution,
    direct_logit_attribution,
    token_attribution,
    token_attribution_by_head,
)
from engine.inspect.cache import ActivationCache, check_heads, parse_head, run_with_cache
from engine.inspect.lens import LensResult, layer_logits, lens_at, lens_logits_at, logit_lens

__all__ = [
    "ActivationCache",
    "Attribution",
    "LensResult",
    "check_heads",
    "direct_logit_attribution",
    "layer_logits",
    "lens_at",
    "lens_logits_at",
    "logit_lens",
    "parse_head",
    "run_with_cache",
    "token_attribution",
    "token_attribution_by_head",
]
