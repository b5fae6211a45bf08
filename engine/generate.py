"""Sampling and streaming generation over a TinySLM with a static KV cache.

Small functions (penalty, logits_to_probs, sample) feed `Generator`, which prefills the prompt,
decodes one token at a time, slides its window when the context fills, and streams text deltas.
`Generator.tokens` is the token-level iterator (benchmarks, batches); `Generator.stream` yields text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field

import torch

from engine.model import TinySLM
from engine.runtime import CompiledFn
from engine.sampling import SamplingParams
from engine.tokenizer import StreamDecoder, TextTokenizer

__all__ = ["Delta", "GenerationResult", "Generator", "SamplingParams", "Stream", "TokenInfo"]


def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL penalty: for tokens in context (B, L), divide positive logits by penalty, multiply negative."""
    if penalty == 1.0 or context.numel() == 0:
        return logits
    seen = logits.gather(1, context)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)


def logits_to_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Float32 probabilities (B, V) after temperature, top-k and top-p; temperature > 0.

    The best logit is subtracted before dividing, so a tiny temperature gives 0 and -inf, never nan.
    """
    logits = logits.float()
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # keep tokens until the mass before them ≥ p
        drop[:, 0] = False  # the likeliest token always stays, however small p is
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
    return logits.softmax(-1)


def sample(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V)."""
    if params.greedy:
        return logits.argmax(-1)
    probs = logits_to_probs(logits, params.temperature, params.top_k, params.top_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


# ---- sampling with tensors only: runs inside a compiled (CUDA-graph) decode step ----------------------------


def sampling_knobs(params: SamplingParams, device: torch.device) -> torch.Tensor:
    """(temperature, top_k, top_p, repetition penalty) as one float32 tensor, an input of the graph."""
    knobs = [params.temperature, float(params.top_k), params.top_p, params.repetition_penalty]
    return torch.tensor(knobs, dtype=torch.float32, device=device)


def context_mask(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V) bool: which tokens occur in each row of ids (B, L), for the repetition penalty."""
    seen = torch.zeros(ids.size(0), vocab_size, dtype=torch.bool, device=ids.device)
    return seen.scatter_(1, ids, True)


def pick_token(
    logits: torch.Tensor, seen: torch.Tensor, knobs: torch.Tensor, noise: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(next ids (B,), penalized logits (B, V)) from logits (B, V), with no Python numbers and no host sync.

    The same rules as apply_repetition_penalty + sample: the penalty over the tokens in `seen` (the
    same float operations), then greedy (noise None) or temperature, top-k, top-p and a draw. The draw is
    the exponential race, argmax(p / E) with E ~ Exp(1) i.i.d. (noise), which picks i with probability p_i.
    Differences from `sample`: top-k keeps exactly k tokens on ties, and the random stream is another.
    """
    temperature, top_k, top_p, penalty = knobs[0], knobs[1], knobs[2], knobs[3]
    penalized = torch.where(logits > 0, logits / penalty.to(logits.dtype), logits * penalty.to(logits.dtype))
    logits = torch.where(seen, penalized, logits)
    if noise is None:
        return logits.argmax(-1), logits
    scaled = logits.float()
    scaled = (scaled - scaled.amax(-1, keepdim=True)) / temperature
    sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
    rank = torch.arange(scaled.size(-1), device=scaled.device)
    sorted_logits = sorted_logits.masked_fill((top_k > 0) & (rank >= top_k), float("-inf"))
    probs = sorted_logits.softmax(-1)
    drop = (probs.cumsum(-1) - probs >= top_p) & (top_p < 1) & (rank > 0)
    probs = probs.masked_fill(drop, 0.0)
    choice = (probs / noise.clamp_min(1e-20)).argmax(-1, keepdim=True)
    return order.gather(1, choice).squeeze(1), logits


@dataclass
class TokenInfo:
    """One generated token for the inspector: its id, text, probability and the top alternatives."""

    id: int
    text: str
    prob: float  # under the model's distribution (after repetition penalty, temperature 1)
    top: list[tuple[str, int, float]] = field(default_factory=list)  # (text, id, prob), best first


@dataclass
class Delta:
    """A piece of streamed text; `token` is set when the caller asked for token details."""

    text: str
    token: TokenInfo | None = None


@dataclass
class GenerationResult:
    """What a finished generation produced and how fast."""

    text: str  # the generated continuation (without the prompt)
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float  # time to first token: prefill and the first sample
    tokens_per_s: float  # generated tokens / decode time after the first token
    finish_reason: str  # "eos", "length" or "cancelled"
    elapsed_s: float


class Generator:
    """Samples stories from a model; the decode step is optionally compiled.

    One story at a time: the KV cache is shared, so `tokens` (and everything built on it) holds a lock
    while it runs and a second caller waits for the first to finish or be cancelled.
    """

    def __init__(
        self, model: TinySLM, tokenizer: TextTokenizer, compile: bool = False, fused_sampling: bool | None = None
    ) -> None:
        self.model = model.eval()
        self.tok = tokenizer
        self.device = model.tok_embeddings.weight.device
        self.ctx = model.config.context_length
        self.vocab_size = model.config.vocab_size
        self.keep = self.ctx // 2  # tokens kept when the window slides
        self.batch = 0
        # penalty and sampling inside the decode step (`pick_token`): by default where the step is a CUDA
        # graph, so a token costs one graph replay; elsewhere sampling stays `sample` (the same stories as ever)
        self.fused = compile and self.device.type == "cuda" if fused_sampling is None else fused_sampling
        step = self._decode_and_pick if self.fused else self._decode_step
        self._decode = CompiledFn(step, self.device, enabled=compile)
        self._pos = torch.zeros(1, dtype=torch.long, device=self.device)  # the decode position, kept on the device
        self._lock = threading.Lock()  # held while a generation uses the KV cache

    @property
    def compile_failed(self) -> str | None:
        """Why torch.compile fell back to eager, if it did."""
        return self._decode.failed

    def _decode_step(self, token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self.model(token, input_pos)[:, -1]

    def _decode_and_pick(
        self, token: torch.Tensor, input_pos: torch.Tensor, seen: torch.Tensor, knobs: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        return pick_token(self.model(token, input_pos)[:, -1], seen, knobs, noise)

    def warm_up(self) -> None:
        """Decode a few tokens now, so a compiled decode step compiles here (CUDA: and records its graphs),
        not in the first story."""
        params = SamplingParams(max_new_tokens=4, temperature=0, repetition_penalty=1.0, stop_at_eos=False)
        for _ in self.tokens([0], params):
            pass
        if self.fused:  # sampled stories run their own graph
            for _ in self.tokens([0], SamplingParams(max_new_tokens=4, seed=0, stop_at_eos=False)):
                pass

    def _ensure_cache(self, batch: int) -> None:
        if self.batch != batch:
            self.model.setup_cache(batch, self.ctx)
            self.batch = batch
            self._decode.forget()  # new cache buffers: a compiled step recompiles (with frozen weights)

    def _prefill(self, window: torch.Tensor) -> torch.Tensor:
        """Run window (B, T) from position 0 and return last-position logits (B, V)."""
        positions = torch.arange(window.size(1), device=self.device)
        return self.model(window, positions, last_only=True)[:, -1]

    def tokens(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        batch: int = 1,
        cancel: threading.Event | Callable[[], bool] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (next ids (B,), penalized logits (B, V)) for up to max_new_tokens steps.

        Every row starts from prompt_ids; the caller decides when to stop (end tokens are yielded too).
        Checks cancel before each token. Close the iterator (or run it to the end) to release the model.
        """
        is_cancelled = _as_cancel(cancel)
        with self._lock, torch.inference_mode():
            yield from self._sample(prompt_ids, params, batch, is_cancelled)

    def _sample(
        self, prompt_ids: list[int], params: SamplingParams, batch: int, cancel: Callable[[], bool]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._ensure_cache(batch)
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(params.seed)
        elif not params.greedy:
            gen = torch.Generator(device=self.device)
            gen.seed()
        history = torch.tensor([prompt_ids] * batch, device=self.device)  # (B, L)
        pos = history.size(1) if history.size(1) < self.ctx else self.keep  # a long prompt: its tail
        logits = self._prefill(history[:, -pos:])
        if self.fused:
            knobs = sampling_knobs(params, self.device)
            seen = context_mask(history[:, -pos:], self.vocab_size)
        nxt = None
        for _ in range(params.max_new_tokens):
            if cancel():
                return
            if nxt is not None:  # the next position: decode the last token, or slide a full window
                history = torch.cat([history, nxt[:, None]], dim=1)
                if pos >= self.ctx:  # context full: slide the window and re-prefill the kept tokens
                    pos = self.keep
                    logits = self._prefill(history[:, -pos:])
                    if self.fused:
                        seen = context_mask(history[:, -pos:], self.vocab_size)
                elif self.fused:
                    seen.scatter_(1, nxt[:, None], True)
                    self._pos.fill_(pos)
                    nxt, logits = self._decode(nxt[:, None], self._pos, seen, knobs, self._noise(params, gen))
                    nxt, logits = nxt.clone(), logits.clone()  # a CUDA graph's next replay overwrites its outputs
                    pos += 1
                    yield nxt, logits
                    continue
                else:
                    self._pos.fill_(pos)
                    logits = self._decode(nxt[:, None], self._pos).clone()
                    pos += 1
            if self.fused:  # a prefill's logits: the same picking, eagerly
                nxt, logits = pick_token(logits, seen, knobs, self._noise(params, gen))
            else:
                logits = apply_repetition_penalty(logits, history[:, -pos:], params.repetition_penalty)
                nxt = sample(logits, params, gen)
            yield nxt, logits

    def _noise(self, params: SamplingParams, gen: torch.Generator | None) -> torch.Tensor | None:
        """Exp(1) noise (B, V) for pick_token's draw from gen; None when greedy."""
        if params.greedy:
            return None
        return torch.empty(self.batch, self.vocab_size, device=self.device).exponential_(generator=gen)

    def stream(
        self,
        prompt: str,
        params: SamplingParams = SamplingParams(),
        cancel: threading.Event | Callable[[], bool] | None = None,
        inspect_top: int = 0,
    ) -> Stream:
        """Stream the continuation of prompt as text deltas (see `Stream`)."""
        return Stream(self, prompt, params.validate(), _as_cancel(cancel), inspect_top)

    def generate(self, prompt: str, params: SamplingParams = SamplingParams()) -> GenerationResult:
        """The whole continuation at once."""
        s = self.stream(prompt, params)
        for _ in s:
            pass
        return s.result

    def generate_batch(self, prompt: str, n: int, params: SamplingParams = SamplingParams()) -> list[str]:
        """n stories sampled at once from one prompt (rows stop independently at the end token)."""
        params = params.validate()
        prompt_ids = self.tok.encode(prompt)
        rows: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        for nxt, _ in self.tokens(prompt_ids, params, n, lambda: all(done)):
            for i, t in enumerate(nxt.tolist()):
                if done[i]:
                    continue
                if params.stop_at_eos and t == self.tok.eos_id:
                    done[i] = True
                else:
                    rows[i].append(t)
        return [_decode_continuation(self.tok, prompt_ids, r) for r in rows]


def _decode_continuation(tok: TextTokenizer, prompt_ids: list[int], ids: list[int]) -> str:
    dec = StreamDecoder(tok, prompt_ids)
    return "".join(dec.push(t) for t in ids) + dec.flush()


def _as_cancel(cancel: threading.Event | Callable[[], bool] | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


class Stream:
    """Iterator of `Delta`s for one story; `result` holds the `GenerationResult` once it ends."""

    def __init__(self, gen: Generator, prompt: str, params: SamplingParams, cancel, inspect_top: int):
        self.gen, self.params, self.cancel, self.inspect_top = gen, params, cancel, inspect_top
        self.prompt_ids = gen.tok.encode(prompt)
        if not self.prompt_ids:
            raise ValueError("empty prompt, and this model has no start token to begin from")
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[Delta]:
        tok, params = self.gen.tok, self.params
        decoder = StreamDecoder(tok, self.prompt_ids)
        pieces: list[str] = []
        start = time.perf_counter()
        first = None
        count = 0
        finish = "length"
        with closing(self.gen.tokens(self.prompt_ids, params, 1, self.cancel)) as steps:
            for nxt, logits in steps:
                t = int(nxt[0])
                if first is None:
                    first = time.perf_counter()
                if params.stop_at_eos and t == tok.eos_id:
                    finish = "eos"
                    break
                count += 1
                info = self._token_info(t, logits[0]) if self.inspect_top else None
                text = decoder.push(t)
                pieces.append(text)
                if text or info:
                    yield Delta(text, info)
        if finish == "length" and count < params.max_new_tokens:
            finish = "cancelled"  # only cancellation ends the token stream early
        tail = decoder.flush()
        if tail:
            pieces.append(tail)
            yield Delta(tail)
        end = time.perf_counter()
        first = first or end
        decode_time = end - first
        self.result = GenerationResult(
            text="".join(pieces),
            prompt_tokens=len(self.prompt_ids),
            generated_tokens=count,
            ttft_s=first - start,
            tokens_per_s=(count - 1) / decode_time if count > 1 and decode_time > 0 else 0.0,
            finish_reason=finish,
            elapsed_s=end - start,
        )

    def _token_info(self, token_id: int, logits: torch.Tensor) -> TokenInfo:
        probs = logits.float().softmax(-1)
        top_p, top_i = probs.topk(self.inspect_top)
        tok = self.gen.tok
        top = [(tok.token_text(i), i, p) for p, i in zip(top_p.tolist(), top_i.tolist(), strict=True)]
        return TokenInfo(token_id, tok.token_text(token_id), float(probs[token_id]), top)
