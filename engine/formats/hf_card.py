"""The model card (README.md with Hub front matter) that `helium export hf` writes beside the weights."""

from __future__ import annotations

from pathlib import Path

from engine.bundles.bundle import Bundle
from engine.generation.sampling import SamplingParams, describe, recommended

DATASET = "roneneldan/TinyStories"


def model_card(bundle: Bundle, repo: str | None = None) -> str:
    """README.md with Hub front matter: license, data set, pipeline tag, eval results, how it was trained."""
    import yaml

    meta = bundle.metadata
    name = repo or bundle.name
    front = front_matter(meta, name)
    table = "\n".join(f"| {k} | {v} |" for k, v in facts(bundle))
    steps = [meta.get("prepared_with"), meta.get("train_command")]
    trained = "\n".join(str(c) for c in steps if c) or str(meta.get("created_by") or "Helium")
    return f"""---
{yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip()}
---

# {name}

A small Llama-style story model made with Helium, a terminal story studio, for children's stories in the
style of [TinyStories]({"https://huggingface.co/datasets/" + DATASET}).

| | |
| --- | --- |
{table}

## How it was made

```bash
{trained}
```

## Use it

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")
ids = tok("Once upon a time", return_tensors="pt").input_ids  # the start-of-story token comes first
print(tok.decode(model.generate(ids)[0], skip_special_tokens=True))
```

{sampling_note(recommended(meta))} Back into Helium: `helium import hf {name} --name {Path(name).name}` (it keeps
these settings); for llama.cpp and Ollama: `helium export gguf`.
"""


def sampling_note(p: SamplingParams) -> str:
    """What the card says of generation_config.json: the model's recommended settings, and what transformers
    applies differently (its repetition penalty has no window and counts the prompt)."""
    note = f"`generation_config.json` holds the settings this model recommends: {describe(p)}."
    custom = p.frequency_penalty or p.presence_penalty or p.name_bonus
    if p.penalizes and (p.repeat_last_n != -1 or not p.penalize_prompt or custom):
        note += (" transformers applies its repetition penalty over every token, prompt included, and has no"
                 " frequency or presence penalty or name bonus; Helium reads all of them from `helium_sampling`.")  # fmt: skip
    return note



def front_matter(meta: dict, name: str) -> dict:
    """The card's Hub front matter: license, language, library, pipeline tag, data set, tags, eval results."""
    bpb = (meta.get("eval_valid_txt") or {}).get("bits_per_byte")
    front: dict = {
        "license": str(meta.get("license", "mit")).lower(),
        "language": ["en"],
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "datasets": [DATASET],
        "tags": ["helium", "llama", "tinystories", "story-generation"],
    }
    if isinstance(bpb, (int, float)):
        result = {
            "task": {"type": "text-generation", "name": "Text generation"},
            "dataset": {"name": "TinyStories (validation)", "type": DATASET, "split": "validation"},
            "metrics": [{"type": "bits_per_byte", "name": "bits per byte", "value": float(bpb)}],
        }
        front["model-index"] = [{"name": name, "results": [result]}]
    return front


def facts(bundle: Bundle) -> list[tuple[str, str]]:
    """The card's table: shape, context, vocabulary, eval and what the metadata says of its training."""
    meta, cfg = bundle.metadata, bundle.config
    params = int(meta.get("parameters") or bundle.model.num_params())
    bpb = (meta.get("eval_valid_txt") or {}).get("bits_per_byte")
    rows = [
        ("parameters", f"{params:,}" + (" (embeddings tied with the output head)" if cfg.tie_embeddings else "")),
        ("shape", f"d_model {cfg.d_model}, {cfg.n_layer} layers, {cfg.n_head} query heads, "
                  f"{cfg.kv_heads} key/value heads, SwiGLU hidden {cfg.hidden_dim}"),
        ("context", f"{cfg.context_length} tokens"),
        ("vocabulary", f"{cfg.vocab_size:,} tokens"),
        ("norm / positions", f"RMSNorm (eps {cfg.norm_eps:g}); RoPE θ = {cfg.rope_theta:g}"),
    ]  # fmt: skip
    if isinstance(bpb, (int, float)):
        rows.append(("eval", f"{bpb:.4f} bits per UTF-8 byte on TinyStories' validation text (`helium eval`)"))
    for key, label in (("data", "data"), ("steps", "steps"), ("tokens", "tokens seen"), ("hardware", "hardware"),
                       ("source", "source"), ("val_loss", "val loss (nats/token)")):  # fmt: skip
        if meta.get(key) is not None:
            rows.append((label, _shown(meta[key])))
    if isinstance(meta.get("wall_time_s"), (int, float)):
        rows.append(("training time", f"{meta['wall_time_s'] / 60:.1f} minutes"))
    return rows


def _shown(value) -> str:
    """A metadata value for the card's table: 1,234 / 2.743 / text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"
