"""`Generator`: a TinySLM with a static KV cache that decodes batches of rows, one token per row a step.

`Decoding` is the token level (prefill, one decode step, the window sliding when the context fills; each
row picked by `engine.generation.sampler.pick` with its own settings and seed). The text level, the one loop that
every caller streams stories through, is `engine.generation.telling` (`Generator.tell` / `Generator.stream`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import groupby

import torch

from engine.generation.names import name_tokens
from engine.generation.runtime import CompiledFn
from engine.generation.sampler import draws, knob_tensor, needs_names, penalty_counts, pick, random_stream
from engine.generation.sampling import SamplingParams
from engine.generation.telling import Delta, GenerationResult, Request, Stream, Telling, TokenInfo, as_cancel
from engine.model.native import native_decoder
from engine.model.tinyslm import TinySLM
from engine.model.tokenizer import TextTokenizer

__all__ = [
    "Decoding", "SlotRow", "Slots", "Delta", "GenerationResult", "Generator", "Request", "SamplingParams", "Stream", "Telling",
    "TokenInfo",
]  # fmt: skip


class Generator:
    """Samples stories from a model; the decode step is optionally compiled.

    One batch at a time: the KV cache is shared, so a `Telling` (or `tokens`) holds a lock while it runs
    and a second caller waits for the first to finish or be cancelled.
    """

    def __init__(
        self,
        model: TinySLM,
        tokenizer: TextTokenizer,
        compile: bool = False,
        fused_sampling: bool | None = None,
    ) -> None:
        self.model = model.eval()
        self.tok = tokenizer
        self.device = model.tok_embeddings.weight.device
        self.ctx = model.config.context_length
        self.vocab_size = model.config.vocab_size
        self.keep = self.ctx // 2  # tokens kept when the window slides
        self.batch = 0
        # the sampler inside the decode step by default where the step is a CUDA graph (a token costs one
        # replay); elsewhere the compiled step is the forward and the same sampler runs after it, eagerly
        self.fused = compile and self.device.type == "cuda" if fused_sampling is None else fused_sampling
        step = self._decode_and_pick if self.fused else self._decode_step
        # CPU: each decode step in one C call where it runs (engine.model.native; native_status says why not)
        self.native = None if self.fused else native_decoder(model)
        # with the native runtime no torch step runs, so there is nothing to compile
        self._decode = CompiledFn(step, self.device, enabled=compile and self.native is None)
        self._pos = torch.zeros(
            1, dtype=torch.long, device=self.device
        )  # the decode position, kept on the device
        self.lock = threading.Lock()  # held while a batch uses the KV cache
        self._names: torch.Tensor | None = None  # the names mask, made on first use (`names`)

    @property
    def compile_failed(self) -> str | None:
        """Why torch.compile fell back to eager, if it did."""
        return self._decode.failed

    def names(self, rows: Sequence[SamplingParams]) -> torch.Tensor | None:
        """(V,) bool on the device: which tokens are names (`engine.generation.names`), made once per generator when
        some row first has a name bonus; None while no row of `rows` has one (the sampler then needs none)."""
        if not needs_names(rows):
            return None
        if self._names is None:
            self._names = name_tokens(self.tok.decode, self.vocab_size).to(self.device)
        return self._names

    def _decode_step(self, token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self.model(token, input_pos)[:, -1]

    def _decode_and_pick(
        self, token: torch.Tensor, input_pos: torch.Tensor, seen: torch.Tensor | None, knobs: torch.Tensor,
        uniform: torch.Tensor | None, names: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        return pick(self.model(token, input_pos)[:, -1], seen, knobs, uniform, names)

    def decode_and_pick(
        self,
        token: torch.Tensor,
        pos: int,
        seen: torch.Tensor,
        knobs: torch.Tensor,
        uniform: torch.Tensor | None,
        names: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(next ids (B,), penalized logits (B, V)) after token (B, 1) at position pos (names: `Generator.names`)."""
        if self.native is not None:
            return pick(self.native.step(token, pos), seen, knobs, uniform, names)
        self._pos.fill_(pos)
        if not self.fused:
            logits = self._decode(token, self._pos)
            if self._decode.compiled is not None:  # a compiled step may reuse its output (CUDA graphs do)
                logits = logits.clone()
            return pick(logits, seen, knobs, uniform, names)
        nxt, logits = self._decode(token, self._pos, seen, knobs, uniform, names)
        return nxt.clone(), logits.clone()  # a CUDA graph's next replay overwrites its outputs

    def warm_up(self) -> None:
        """Decode a few tokens now, so a compiled decode step compiles here (CUDA: and records its graphs),
        not in the first story."""
        params = SamplingParams(max_new_tokens=4, temperature=0, stop_at_eos=False)
        for _ in self.tokens([0], params):
            pass
        if self.fused:  # sampled stories run their own graph
            for _ in self.tokens([0], SamplingParams(max_new_tokens=4, seed=0, stop_at_eos=False)):
                pass

    def ensure_cache(self, batch: int) -> None:
        """A KV cache for batch rows (kept while the batch size stays)."""
        if self.batch != batch:
            self.model.setup_cache(batch, self.ctx)
            self.batch = batch
            self._decode.forget()  # new cache buffers: a compiled step recompiles (with frozen weights)

    def prefill(self, window: torch.Tensor) -> torch.Tensor:
        """Run window (B, T) from position 0 and return last-position logits (B, V)."""
        positions = torch.arange(window.size(1), device=self.device)
        return self.model(window, positions, last_only=True)[:, -1]

    def decoding(self, prompt_ids: list[int], rows: Sequence[SamplingParams]) -> Decoding:
        """Prefill prompt_ids for one row per params (under inference mode, holding `lock`)."""
        return Decoding(self, prompt_ids, rows)

    def tokens(
        self, prompt_ids: list[int], params: SamplingParams, batch: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (next ids (B,), penalized logits (B, V)) for max_new_tokens steps (end tokens too).

        Every row starts from prompt_ids; row n draws with params.for_row(n). For benchmarks and tests;
        stories go through `tell`. Close the iterator (or run it to the end) to release the model.
        """
        rows = [params.for_row(n) for n in range(batch)]
        with self.lock, torch.inference_mode():
            decoding = self.decoding(prompt_ids, rows)
            for _ in range(params.max_new_tokens):
                yield decoding.step()

    def tell(self, requests: Sequence[Request]) -> Telling:
        """Stories for requests told as one batch: iterate it for each step's `Delta`s (see `Telling`)."""
        return Telling(self, requests)

    def stream(
        self,
        prompt: str,
        params: SamplingParams = SamplingParams(),
        cancel: threading.Event | Callable[[], bool] | None = None,
        inspect_top: int = 0,
    ) -> Stream:
        """Stream the continuation of prompt as text deltas: a `Telling` of one row."""
        return Stream(self.tell([Request(prompt, params, as_cancel(cancel), inspect_top)]))


class Decoding:
    """The token level of one batch: prefill the prompt, then `step` picks one token per row.

    Rows share the prompt and the positions (the KV cache keeps one position for the batch); each has its
    own settings and random stream. When the context fills, the window slides: the last ctx/2 tokens are
    prefilled again. Run under torch.inference_mode, holding the generator's lock.
    """

    def __init__(self, gen: Generator, prompt_ids: list[int], rows: Sequence[SamplingParams]) -> None:
        self.gen = gen
        gen.ensure_cache(len(rows))
        self.knobs = knob_tensor(rows, gen.device)
        self.streams = [random_stream(p) for p in rows]
        self.sampled = not all(p.greedy for p in rows)  # greedy rows only: no draws, no sorting
        self.rows = list(rows)
        self.penalized = any(p.penalizes for p in rows)  # else no counts of earlier tokens either
        self.names = gen.names(rows)  # None unless some row has a name bonus
        # a row that looks at its last n tokens only recounts every step; the others add the newest token
        self.recount = any(p.repeat_last_n > 0 for p in rows)
        self.history = torch.tensor([prompt_ids] * len(rows), device=gen.device)  # (B, L)
        length = self.prompt_len = self.history.size(1)
        self.pos = length if length < gen.ctx else gen.keep  # a long prompt: its tail
        self.logits: torch.Tensor | None = gen.prefill(self.history[:, -self.pos :])  # not picked from yet
        self.seen = self._seen(self.pos)
        self.last: torch.Tensor | None = None  # the ids picked by the previous step

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(next ids (B,), penalized logits (B, V)): one more token for every row."""
        gen = self.gen
        uniform = draws(self.streams, gen.device) if self.sampled else None
        if self.last is not None:
            self.history = torch.cat([self.history, self.last[:, None]], dim=1)
            if self.pos < gen.ctx:  # decode the last token
                if self.recount:
                    self.seen = self._seen(self.pos + 1)  # the window: the cache's pos tokens and this one
                elif self.seen is not None:
                    self.seen.scatter_add_(1, self.last[:, None], self.counted)
                self.last, logits = gen.decode_and_pick(
                    self.last[:, None], self.pos, self.seen, self.knobs, uniform, self.names
                )
                self.pos += 1
                return self.last, logits
            self.pos = gen.keep  # context full: slide the window and prefill the kept tokens again
            self.logits = gen.prefill(self.history[:, -self.pos :])
            self.seen = self._seen(self.pos)
        assert self.logits is not None
        self.last, logits = pick(self.logits, self.seen, self.knobs, uniform, self.names)  # a prefill's, eagerly
        self.logits = None
        return self.last, logits

    def _seen(self, window: int) -> torch.Tensor | None:
        """How often each row's penalties have seen each token among history's last `window` (B, V)
        (`penalty_counts`); None when no row penalizes. `counted` (B, 1): 1 for the rows whose counts grow with each new token (0: repeat_last_n 0)."""
        if not self.penalized:
            return None
        self.counted = torch.tensor([[float(p.repeat_last_n != 0)] for p in self.rows], device=self.gen.device)
        start = self.history.size(1) - window
        return penalty_counts(self.history, start, self.prompt_len, self.rows, self.gen.vocab_size)


class SlotRow:
    """One row of `Slots`: its tokens so far (prompt window and generated), position, settings and draws."""

    def __init__(self, history: list[int], params: SamplingParams) -> None:
        self.history = history  # the tokens of its window, then every token picked
        self.prompt_len = len(history)  # how many of history's first tokens are the prompt's
        self.params = params
        self.stream = random_stream(params)
        self.pos = 0  # the next position to decode at (the tokens the cache holds for it)

    def counts(self, vocab_size: int, device: torch.device) -> torch.Tensor:
        """(V,) how often the row's penalties count each token of its window (`penalty_counts`)."""
        history = torch.tensor([self.history], device=device)
        return penalty_counts(history, 0, self.prompt_len, [self.params], vocab_size)[0]

    def slide(self, keep: int) -> None:
        """Keep the last `keep` tokens of the window (its context is full)."""
        self.prompt_len = max(0, self.prompt_len - (len(self.history) - keep))
        self.history = self.history[-keep:]


class Slots:
    """A running batch whose rows join and leave between steps, each at its own position in the KV cache.

    For a server: `join` prefills new rows (those whose prompts are as long together, in one forward) and picks
    each one's first token; `step` decodes the last token of every row at once, each at its own position with its
    own settings and draws, on the native runtime where the generator has one (`Generator.native`), else on the
    torch model, so a seeded row picks the same tokens whatever else shares the batch; `remove` moves the last row
    into the freed cache row. A row whose context fills slides alone (its last ctx/2 tokens prefilled again).
    Eager (no compiled step); run under torch.inference_mode, holding the generator's lock, on one thread.
    """

    def __init__(self, gen: Generator, capacity: int) -> None:
        self.gen = gen
        self.capacity = capacity
        gen.ensure_cache(capacity)
        self.rows: list[SlotRow] = []  # row i lives in cache row i
        self.knobs = torch.zeros(capacity, len(SamplingParams().knobs()), device=gen.device)
        self.seen = torch.zeros(capacity, gen.vocab_size, dtype=torch.float32, device=gen.device)  # penalty counts
        # 1 for the rows whose counts grow by each new token (they penalize the whole window), else 0
        self.grows = torch.zeros(capacity, 1, dtype=torch.float32, device=gen.device)

    def add(self, prompt_ids: list[int], params: SamplingParams) -> tuple[SlotRow, int, torch.Tensor]:
        """Prefill a new row and pick its first token: (the row, the token id, its penalized logits (V,))."""
        return self.join([(prompt_ids, params)])[0]

    def join(self, asks: Sequence[tuple[list[int], SamplingParams]]) -> list[tuple[SlotRow, int, torch.Tensor]]:
        """Prefill new rows and pick each one's first token: (the row, the token id, its penalized logits (V,)) in
        asks' order. Rows whose prompt windows are as long are prefilled together, in one forward."""
        free = self.capacity - len(self.rows)
        if len(asks) > free:
            raise ValueError(f"all {self.capacity} slots are in use" if not free else f"{len(asks)} rows, {free} free")
        new = [SlotRow(self._window(ids), params) for ids, params in asks]
        start = len(self.rows)
        self.rows += sorted(new, key=lambda r: len(r.history))  # equal lengths side by side in the cache
        out: dict[int, tuple[SlotRow, int, torch.Tensor]] = {}
        try:
            i = start
            for _, same in groupby(self.rows[start:], key=lambda r: len(r.history)):
                group = slice(i, i + len(list(same)))
                for j in range(group.start, group.stop):
                    self.knobs[j] = torch.tensor(self.rows[j].params.knobs())
                    self._count(j, self.rows[j])
                ids, picked = self._pick(group, self._prefill(group, [r.history for r in self.rows[group]]))
                out.update((id(r), (r, t, p)) for r, t, p in zip(self.rows[group], ids, picked, strict=True))
                i = group.stop
        except BaseException:
            del self.rows[start:]  # they never joined
            raise
        return [out[id(r)] for r in new]

    def remove(self, row: SlotRow) -> None:
        """Free a row's cache row: the last row moves into it."""
        i, last = self.rows.index(row), len(self.rows) - 1
        if i != last:
            for layer in self.gen.model.layers:
                cache = layer.attn.cache
                cache.k[i].copy_(cache.k[last])
                cache.v[i].copy_(cache.v[last])
            for t in (self.knobs, self.seen, self.grows):
                t[i] = t[last]
            self.rows[i] = self.rows[last]
        self.rows.pop()

    def step(self) -> tuple[list[int], torch.Tensor]:
        """The next token of every row (ids, in row order) and their penalized logits (B, V)."""
        gen, n = self.gen, len(self.rows)
        for i, row in enumerate(self.rows):
            if row.pos >= gen.ctx:  # its context is full: slide its window, all but the last token again
                row.slide(gen.keep)
                self._prefill(slice(i, i + 1), [row.history[:-1]])
                self._count(i, row)
            elif row.params.repeat_last_n > 0 and row.params.penalizes:  # its window of counted tokens moves
                self._count(i, row)
        last = torch.tensor([[r.history[-1]] for r in self.rows], device=gen.device)
        pos = torch.tensor([r.pos for r in self.rows], device=gen.device)
        if gen.native is not None:
            logits = gen.native.step(last, pos)
        else:
            logits = gen.model(last, pos[:, None], rows=slice(0, n))[:, -1]
        for row in self.rows:
            row.pos += 1
        return self._pick(slice(0, n), logits)

    def _window(self, prompt_ids: list[int]) -> list[int]:
        """The prompt's tokens a row starts from: all of them, or a long prompt's last ctx/2."""
        return list(prompt_ids[-self.gen.keep :] if len(prompt_ids) >= self.gen.ctx else prompt_ids)

    def _prefill(self, rows: slice, windows: list[list[int]]) -> torch.Tensor:
        """Prefill windows (as long each) from position 0 in cache rows `rows`: the last position's logits (B, V)."""
        window = torch.tensor(windows, device=self.gen.device)
        positions = torch.arange(window.size(1), device=self.gen.device)
        logits = self.gen.model(window, positions, last_only=True, rows=rows)[:, -1]
        for row in self.rows[rows]:
            row.pos = window.size(1)
        return logits

    def _count(self, i: int, row: SlotRow) -> None:
        """Count row i's window afresh for its penalties (`penalty_counts`); zeros when it has none."""
        params = row.params
        if params.penalizes:
            self.seen[i] = row.counts(self.gen.vocab_size, self.gen.device)
        else:
            self.seen[i].zero_()
        self.grows[i] = float(params.penalizes and params.repeat_last_n < 0)

    def _pick(self, rows: slice, logits: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Pick the next token of rows `rows` from their logits (B, V) and append it to each row's history:
        (ids, penalized logits (B, V))."""
        group = self.rows[rows]
        uniform = None if all(r.params.greedy for r in group) else draws([r.stream for r in group], self.gen.device)
        seen = self.seen[rows] if any(r.params.penalizes for r in group) else None
        ids, picked = pick(logits, seen, self.knobs[rows], uniform, self.gen.names([r.params for r in group]))
        out = ids.tolist()  # the step's one sync
        for row, token in zip(group, out, strict=True):
            row.history.append(token)
        self.seen[rows].scatter_add_(1, ids[:, None], self.grows[rows])  # the rows that count every token
        return out, picked
