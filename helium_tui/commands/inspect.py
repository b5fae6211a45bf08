"""`helium inspect PROMPT`: look inside the model on a text: each layer's logit lens and attention, knock-outs.

A table fitted to the terminal by default; `--json` prints issue 22's contract (docs/inspect.md).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from helium_tui.commands.tell import read_prompt
from helium_tui.errors import user_errors
from helium_tui.safe_text import terminal_safe

DTYPE_HELP = (
    "float32, bfloat16, or auto (float32: the bundle's weights exactly; the inspection computes in float32)."
)
TOKEN_WIDTH = 12  # the token column
CELL_WIDTH = 10  # a layer's column: 'Lily .93' and a space


def inspect_cmd(
    prompt: Annotated[str, typer.Argument(help="The text to look inside; '-' reads it from stdin.")],
    model: Annotated[str, typer.Option(help="Model bundle: a path or an installed name.")] = "",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    ablate: Annotated[
        list[str] | None,
        typer.Option(
            help="Knock out head LAYER.HEAD (0-based, e.g. 3.5) at every position; repeat for more."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (docs/inspect.md) instead.")
    ] = False,
) -> None:
    """Look inside the model on PROMPT: what each layer predicts, where it attends, what knock-outs change."""
    with user_errors():
        from engine.inspect.cache import check_heads, parse_head

        prompt = read_prompt(prompt)
        if not prompt.strip():
            raise ValueError("the prompt is empty: give the text to look inside")
        heads = [parse_head(text) for text in ablate or []]
        from engine.generation.session import open_session
        from engine.inspect.report import fit_context, inspect_ids

        session = open_session(model or None, device="cpu", dtype="float32" if dtype == "auto" else dtype)
        config, tok = session.bundle.config, session.bundle.tokenizer
        heads = check_heads(config, heads)
        ids = tok.encode(prompt)
        if len(ids) > config.context_length:
            print(
                f"helium: note: the prompt is {len(ids)} tokens and the model attends over {config.context_length}: "
                f"inspecting the last {config.context_length}",
                file=sys.stderr,
            )
        inspection = inspect_ids(session.name, session.bundle.model, tok, fit_context(config, ids), heads)
    if as_json:
        from engine.inspect.report import to_json

        print(json.dumps(to_json(inspection), ensure_ascii=False))
    else:
        print_tables(inspection)


def fit(text: str, width: int) -> str:
    """text in exactly width terminal cells: cut with '…' when longer, padded with spaces when shorter."""
    from rich.cells import cell_len

    if cell_len(text) > width:
        while text and cell_len(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - cell_len(text))


def shown(text: str) -> str:
    """A token's text for the terminal: newlines and tabs made visible, control characters replaced."""
    return terminal_safe(text.replace("\n", "↵").replace("\t", "⇥"))


def cell(token: str, p: float, width: int = CELL_WIDTH - 1) -> str:
    """'Lily .93': a token and a probability in width cells (a probability of 1.00 shows as 1)."""
    prob = "1" if p >= 0.995 else f"{p:.2f}".removeprefix("0")
    return fit(shown(token), width - len(prob) - 1) + " " + prob


def chosen_layers(count: int, room: int) -> list[int]:
    """Indices 0..count-1, or evenly spaced ones (the first and last kept) when only room columns fit."""
    if count <= room:
        return list(range(count))
    room = max(room, 2)
    return sorted({round(i * (count - 1) / (room - 1)) for i in range(room)})


def table(title: str, tokens: list[str], layers: list[int], count: int, cells) -> list[str]:
    """Lines of a table: a title, a header (pos, token, layers), one row per position; cells(layer, t) -> str."""
    pos_width = len(str(len(tokens) - 1))
    if len(layers) < count:
        title += f" (layers {', '.join(map(str, layers))} of 0-{count - 1}: a wider terminal shows them all)"
    header = [
        fit("pos", max(pos_width, 3)),
        fit("token", TOKEN_WIDTH),
        *(fit(f"L{n}", CELL_WIDTH - 1) for n in layers),
    ]
    lines = [title, " ".join(header).rstrip()]
    for t, token in enumerate(tokens):
        row = [
            str(t).rjust(max(pos_width, 3)),
            fit(shown(token), TOKEN_WIDTH),
            *(cells(layer, t) for layer in layers),
        ]
        lines.append(" ".join(row).rstrip())
    return lines


def print_tables(inspection) -> None:
    """The lens table, the attention table and the next-token line, fitted to the terminal's width."""
    import shutil

    from engine.inspect.report import most_attended

    cache, lens, tok = inspection.cache, inspection.lens, inspection.tokenizer
    tokens = [tok.token_text(i) for i in cache.token_ids]
    room = max(2, (shutil.get_terminal_size().columns - 4 - TOKEN_WIDTH) // CELL_WIDTH)
    knocked = ", ".join(f"{layer}.{head}" for layer, head in cache.ablated) or "none"
    lines = [
        f"{terminal_safe(inspection.name)}: {len(tokens)} tokens, {cache.n_layer} layers of {cache.n_head} heads; "
        f"knocked out: {knocked}",
        "",
    ]

    def lens_cell(layer: int, t: int) -> str:
        return cell(tok.token_text(int(lens.ids[layer, t, 0])), float(lens.probs[layer, t, 0]))

    title = "Logit lens: each layer's top guess for the next token and its probability (L0 = the embeddings)"
    lines += table(title, tokens, chosen_layers(cache.n_layer + 1, room), cache.n_layer + 1, lens_cell)
    where, weight = most_attended(cache)

    def attention_cell(layer: int, t: int) -> str:
        return cell(tokens[int(where[layer, t])], float(weight[layer, t])) if t else fit("", CELL_WIDTH - 1)

    title = "Attention: the earlier token each layer attends to most (its heads averaged) and the weight"
    lines += ["", *table(title, tokens, chosen_layers(cache.n_layer, room), cache.n_layer, attention_cell)]
    probs, ids = cache.logits[-1].softmax(-1).topk(5)
    best = (
        f"'{shown(tok.token_text(i))}' {p:.2f}" for p, i in zip(probs.tolist(), ids.tolist(), strict=True)
    )
    lines += ["", "Next token: " + ", ".join(best)]
    print("\n".join(lines))
