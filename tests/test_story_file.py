"""The story reader against anything a story file may hold: any JSON value in any field, any bytes, any cut.

Property tests (hypothesis): reading never raises anything but a clean skip (StoryFileError, a one-line
warning), and what it returns has the types the library and the studio rely on.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import helium_tui.library as library
from helium_tui.library import Story, StoryStore, capped, opening, short_date
from helium_tui.safe_text import is_terminal_safe
from helium_tui.story_file import StoryFileError, clean_fields, clean_params, parse_head

FIELDS = ["prompt", "text", "params", "model", "seed", "created", "tokens", "finish_reason", "id", "chars_cut",
          "format"]  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # any JSON value (floats include nan and ±inf, which Python's json writes and reads)
STORY_FILE = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6),
    JSON | st.text(),
    max_size=12,
).map(lambda d: {"prompt": "p", "text": "t", **d} if len(d) % 3 else d)  # often a story, sometimes not
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check_story(story: Story) -> None:
    """A story the library and the studio can use: right types, shown and exported without raising."""
    assert isinstance(story.prompt, str) and isinstance(story.text, str)
    assert isinstance(story.params, dict) and all(isinstance(k, str) for k in story.params)
    assert all(not isinstance(v, float) or math.isfinite(v) for v in story.params.values())
    assert isinstance(story.model, str) and isinstance(story.created, str)
    assert story.seed is None or (type(story.seed) is int and story.seed >= 0)
    assert type(story.tokens) is int and story.tokens >= 0
    for shown in (opening(story, 40), short_date(story), StoryStore.as_markdown(story), StoryStore.as_text(story)):
        assert is_terminal_safe(shown)
    json.dumps(capped(story).to_dict(), ensure_ascii=False).encode("utf-8")  # it can be saved again


@SETTINGS
@given(data=STORY_FILE)
def test_any_json_in_any_field_is_read_or_cleanly_skipped(tmp_path, data):
    store = StoryStore(tmp_path / "stories")
    store.root.mkdir(exist_ok=True)
    path = store.root / "20260101-000000-abcd.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    for read in (store.list, store.scan):
        found, warnings = read()
        assert len(found) + sum(w.startswith("skipped") for w in warnings) == 1
        for item in found:
            check_story(item if isinstance(item, Story) else item.story)
    try:
        check_story(store.get("20260101-000000-abcd"))
    except StoryFileError:
        pass


@SETTINGS
@given(data=STORY_FILE, cut=st.integers(min_value=1, max_value=400))
def test_a_file_cut_anywhere_is_listed_from_its_head_or_cleanly_skipped(tmp_path, monkeypatch, data, cut):
    monkeypatch.setattr(library, "HEAD_BYTES", cut)  # the list reads only the first `cut` bytes
    store = StoryStore(tmp_path / "stories")
    store.root.mkdir(exist_ok=True)
    (store.root / "a.json").write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    heads, warnings = store.scan()
    assert len(heads) + len(warnings) >= 1
    for head in heads:
        check_story(head.story)


@SETTINGS
@given(content=st.binary(max_size=300))
def test_any_bytes_are_read_or_cleanly_skipped(tmp_path, content):
    store = StoryStore(tmp_path / "stories")
    store.root.mkdir(exist_ok=True)
    (store.root / "b.json").write_bytes(content)
    for read in (store.list, store.scan):
        found, warnings = read()
        assert len(found) + len(warnings) >= 1


def test_a_head_cut_inside_a_string_keeps_what_was_read():
    full = json.dumps({"model": "tiny", "prompt": "Once ", "text": "upon a time \u00e9\ud83d\ude00 and \\ more"})
    for cut in range(1, len(full)):
        head = parse_head(full[:cut])
        assert head.get("model", "tiny") in ("tiny", "", "t", "ti", "tin")
        if "text" in head:
            assert "upon a time é😀 and \\ more".startswith(head["text"])
    assert parse_head(full[: full.index("upon") + 7])["text"] == "upon a "


@pytest.mark.parametrize("value, kept", [
    ({"temperature": 0.7, "top_k": 40, "seed": 3, "stop_at_eos": True}, True),
    ({"temperature": float("nan")}, False), ({"temperature": -1}, False), ({"top_p": 0}, False),
    ({"repetition_penalty": 1e-300}, False), ({"max_new_tokens": 10**9}, False), ({"seed": 2**64}, False),
    ({"stop_at_eos": "yes"}, False), ({"other": "x" * 500}, False), ({"other": float("inf")}, False),
])  # fmt: skip
def test_sampling_params_are_kept_only_when_they_can_sample(value, kept):
    values, ignored = clean_fields({"prompt": "", "text": "", "params": value}, whole=True)
    assert (values["params"] == value) is kept and bool(ignored) is not kept


@pytest.mark.parametrize("module", ["helium_tui.story_file", "helium_tui.screens.training.form_values",
                                    "helium_tui.screens.library", "helium_tui.screens.training.screen"])  # fmt: skip
def test_the_library_and_the_monitor_load_without_torch(module):
    import subprocess
    import sys

    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", f"importing {module} loads torch"


@pytest.mark.parametrize(
    "prompt, text, shown",
    [
        ("Once upon a time", ", there was a girl.", "there was a girl."),  # not ", there was…"
        ("Once upon a ti", "me, there was a girl.", "there was a girl."),  # not the rest of a cut word
        ("Tom said.", ' "Hello!" said Sam.', '"Hello!" said Sam.'),  # an opening quote stays
        ("Once upon a time ", "the new story.", "the new story."),
        ("A prompt", ".", "A prompt"),  # nothing but punctuation: the prompt
    ],
)
def test_the_opening_starts_at_a_word(prompt, text, shown):
    assert opening(Story(prompt, text, {}, "m"), 40) == shown


def test_a_story_keeps_the_penalties_settings_and_drops_bad_ones(tmp_path):
    from dataclasses import asdict

    from engine.generation.sampling import SamplingParams

    params = asdict(SamplingParams(frequency_penalty=0.3, presence_penalty=0.2, repeat_last_n=64, penalize_prompt=False))
    store = StoryStore(tmp_path)
    story = store.save(Story("Once", " upon", params, "m"))
    back = store.get(story.id).params
    assert {k: back[k] for k in ("frequency_penalty", "presence_penalty", "repeat_last_n", "penalize_prompt")} == {
        "frequency_penalty": 0.3, "presence_penalty": 0.2, "repeat_last_n": 64, "penalize_prompt": False}
    bad = {"frequency_penalty": 9.0, "repeat_last_n": -5, "penalize_prompt": "no", "presence_penalty": 0.1}
    kept, dropped = clean_params(bad)
    assert kept == {"presence_penalty": 0.1} and sorted(dropped) == ["frequency_penalty", "penalize_prompt", "repeat_last_n"]
