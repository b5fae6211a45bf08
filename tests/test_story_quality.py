"""The story-quality measures on fixed texts (engine.generation.story_quality) and `helium eval --stories`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from engine.generation.story_quality import (
    Story,
    ends,
    invented_names,
    loops,
    name_kept,
    repeated_ngrams,
    score,
    words,
)
from helium_tui.cli import app

PROMPT = "Once upon a time, there was a little girl named Mia."


def test_name_kept_is_a_whole_word():
    assert name_kept("Mia", " Mia's dog ran. Then Mia smiled.")
    assert not name_kept("Mia", " Miami was far. She smiled.")
    assert not name_kept("Sam", " The same sun shone.")


def test_invented_names_are_new_capitalised_words_that_are_not_sentence_openers():
    text = (' One day, Mia met Anna at the park. "Hello, Anna!" said Mia. Then they saw Spot.'
            " Suddenly, Ben's kite flew. She said, \"I'm happy, Mom.\" Park was fun. The park was big.")
    # Anna, Spot (mid-sentence) and Ben (possessive, never lower case) are new; One, Then, Suddenly, She,
    # I'm, Mom are common words; Mia is the prompt's; Park opens a sentence and "park" occurs in lower case
    assert sorted(invented_names(PROMPT, text)) == ["Anna", "Ben", "Spot"]
    assert invented_names(PROMPT, " Mia played. She was happy. The end.") == []


def test_a_capitalised_sentence_opener_counts_only_when_never_lower_case():
    assert invented_names(PROMPT, " Mia ran. Lily came too.") == ["Lily"]
    assert invented_names(PROMPT, " Mia ran. Jump was fun. She likes to jump.") == []


def test_repeated_ngrams_and_loops():
    assert repeated_ngrams("a b c d e f") == 0.0
    assert repeated_ngrams("a b c d a b c d") == 1 / 5  # 5 four-grams, "a b c d" twice
    assert repeated_ngrams("a b c") == 0.0
    loop = "She was happy and she played. " * 3
    assert loops(" Mia ran. " + loop) and not loops(" Mia ran. " + loop.split(".")[0] * 2)
    assert not loops("One two three four five six seven eight.")


def test_a_story_ends_at_the_end_token_or_with_the_end():
    assert ends("and they played.", "eos")
    assert ends("and they played. The end.", "length")
    assert ends("and they played. THE END", "length")
    assert not ends("and they played. The end of the day came.", "length")


def test_score_sums_up_stories():
    stories = [
        Story(PROMPT, "Mia", 1, " Mia met Anna. The end.", "length"),
        Story(PROMPT, "Mia", 2, " She ran and ran and ran.", "length"),
    ]
    got = score(stories)
    assert got["stories"] == 2 and got["name_kept_pct"] == 50.0 and got["invented_names"] == 0.5
    assert got["ended_pct"] == 50.0 and got["loops"] == 0
    assert got["mean_words"] == (len(words(stories[0].text)) + len(words(stories[1].text))) / 2


def test_eval_stories_compares_settings_on_seeded_stories(tiny_bundle, one_thread):
    args = ["eval", "--model", str(tiny_bundle), "--stories", "3", "--max-tokens", "12", "--json", "--device", "cpu",
            "--set", "temperature=0", "--set", "temperature=0.9,repeat_last_n=8,penalize_prompt=false"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    out = json.loads(first.output)
    assert [r["stories"] for r in out["rows"]] == [3, 3]
    assert "last 8 spare-prompt" in out["rows"][1]["params"]
    assert json.loads(CliRunner().invoke(app, args).output)["rows"] == out["rows"]  # seeded: the same stories


def test_eval_stories_refuses_a_bad_setting_in_one_line(tiny_bundle):
    for bad in ("temperature", "colour=3", "top_k=x", "temperature=-1"):
        result = CliRunner().invoke(app, ["eval", "--model", str(tiny_bundle), "--stories", "2", "--set", bad])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
