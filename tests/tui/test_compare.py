"""The compare view: variants are exactly the rows of one batch (`Generator.tell`), stream into columns, and the
chosen one goes into the studio and the library. Real tiny models; every wait has a deadline.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from engine.generation.sampling import SamplingParams
from engine.generation.session import open_session
from helium_tui.library import StoryStore
from helium_tui.screens.compare import CompareScreen
from helium_tui.variants import Batch, tell_variants
from tests.stories import told as told_story
from tests.stories import told_rows
from tests.tui.conftest import loaded, make_app, until

SIZE = (100, 30)
PROMPT = "Once upon a time"
SAMPLED = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=1.0, repetition_penalty=1.0, seed=7)


def told(batches, params=SAMPLED, cancel=None, prompt=PROMPT):
    """Run tell_variants; per column its text and finish reason."""
    columns = sum(len(b.columns) for b in batches)
    texts, finish, tokens = [""] * columns, [""] * columns, [0] * columns

    def emit(column: int, text: str, reason: str) -> None:
        texts[column] += text
        if reason:
            assert not finish[column], "a column ends once"
            finish[column] = reason
        else:
            tokens[column] += 1

    tell_variants(batches, prompt, params, cancel or threading.Event(), emit)
    return texts, finish, tokens


def test_variants_are_the_rows_of_one_batch(tiny_bundle):
    gen = open_session(str(tiny_bundle), "cpu", "float32").generator
    texts, finish, tokens = told([Batch(gen, [0, 1, 2])])
    assert texts == told_rows(gen, PROMPT, 3, SAMPLED)
    # variant n is the story seed + n tells on its own, so a kept variant's seed tells it again
    assert texts == [told_story(gen, PROMPT, SAMPLED.for_row(n)).text for n in range(3)]
    assert len(set(texts)) == 3, "different draws"
    assert set(finish) <= {"eos", "length"} and all(0 < n <= 24 for n in tokens)


def test_two_models_take_turns_and_each_tells_its_own_batch(tiny_bundle, installed_second):
    a = open_session(str(tiny_bundle), "cpu", "float32").generator
    b = open_session(str(installed_second), "cpu", "float32").generator
    texts, _, _ = told([Batch(a, [0, 2]), Batch(b, [1])])
    mine = told_rows(a, PROMPT, 2, SAMPLED)
    assert [texts[0], texts[2]] == mine and [texts[1]] == told_rows(b, PROMPT, 1, SAMPLED)


def test_cancel_ends_every_row_and_frees_the_model(tiny_bundle):
    gen = open_session(str(tiny_bundle), "cpu", "float32").generator
    cancel = threading.Event()
    long = SamplingParams(max_new_tokens=2000, temperature=0, stop_at_eos=False, seed=1)
    seen = []

    def emit(column, text, reason):
        seen.append(reason)
        if len(seen) == 9:
            cancel.set()

    tell_variants([Batch(gen, [0, 1, 2])], PROMPT, long, cancel, emit)
    assert seen.count("cancelled") == 3 and len(seen) < 30
    done = threading.Event()
    threading.Thread(
        target=lambda: (told_story(gen, "Tom", SamplingParams(max_new_tokens=4)), done.set())
    ).start()
    assert done.wait(60), "the model is free for the next story"


async def open_compare(app, pilot, seed: int = 7) -> CompareScreen:
    """Fix the studio's seed, press f3 and wait until every variant has ended."""
    from helium_tui.widgets.sliders import SeedRow

    studio = app.studio
    studio.param("temperature").value = 1.0
    studio.param("top_p").value = 1.0
    studio.param("repetition_penalty").value = 1.0
    studio.param("max_tokens").value = 32
    studio.query_one(SeedRow).set_seed(seed)
    await pilot.pause()
    await pilot.press("f3")
    await until(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare view")
    screen = app.screen
    await until(pilot, lambda: screen.job is not None and not screen.generating, "the variants to be told")
    await pilot.pause()
    return screen


@pytest.mark.slow
async def test_compare_view_streams_variants_and_keeps_the_chosen_one(tiny_bundle, tmp_path):
    app = make_app(tiny_bundle, stories_dir=tmp_path / "stories")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        screen = await open_compare(app, pilot)
        job = screen.job
        params = SamplingParams(max_new_tokens=32, temperature=1.0, top_p=1.0, repetition_penalty=1.0, seed=7)
        expected = told_rows(app.session.generator, PROMPT, 3, params)
        assert [v.text for v in job.variants] == expected
        assert [c.story.text for c in screen.columns[:3]] == expected  # what the columns show
        assert [c.display for c in screen.columns] == [True, True, True, False]
        titles = {c.title for c in app.get_system_commands(screen)}  # ctrl+p: this screen's actions
        assert {"Keep", "Retell", "More", "Fewer", "Against", "Back", "Compare draws of this model"} <= titles
        assert "Tell" not in titles
        await pilot.press("f1")
        await until(pilot, lambda: app.screen is not screen, "the help")
        shown = app.export_screenshot().replace("&#160;", " ")
        assert "Keep the chosen variant" in shown and "Compare" in shown
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the compare view again")
        await pilot.press("right")
        assert screen.chosen == 1 and screen.columns[1].has_class("-chosen")
        await pilot.press("enter")
        story = app.studio.story
        await until(pilot, lambda: app.screen is app.studio and story.text == expected[1], "the kept variant")
        assert story.prompt == PROMPT
        stories, _ = StoryStore(tmp_path / "stories").list()
        assert len(stories) == 1
        kept = stories[0]
        assert (
            kept.text == expected[1] and kept.model == "tiny-bundle" and kept.seed == 8
        )  # variant 2 is row 1: seed 7 + 1, the story seed 8 tells alone
        assert kept.params["variant"] == "2 of 3" and kept.params["batch_row"] == 2
        assert any("Kept variant 2" in n.message for n in app._notifications)


@pytest.mark.slow
async def test_compare_against_another_model_and_change_the_count(tiny_bundle, installed_second):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        screen = await open_compare(app, pilot)
        await pilot.press("m")  # against tiny-two
        await until(
            pilot, lambda: screen.against == "tiny-two" and not screen.generating, "tiny-two's variants"
        )
        params = screen.job.params
        assert [v.model for v in screen.job.variants] == ["tiny-bundle", "tiny-bundle", "tiny-two"]
        mine = told_rows(app.session.generator, PROMPT, 2, params)
        theirs = told_rows(open_session(str(installed_second), "cpu", "float32").generator, PROMPT, 1, params)
        assert [v.text for v in screen.job.variants] == mine + theirs
        kept = app.state.compare_session
        assert kept is not None and kept.name == "tiny-two"  # kept for next time
        await pilot.press("plus")
        await until(pilot, lambda: screen.count == 4 and not screen.generating, "four variants")
        assert [v.model for v in screen.job.variants] == ["tiny-bundle"] * 2 + ["tiny-two"] * 2
        await pilot.press("minus", "minus", "minus")  # never below two
        await until(pilot, lambda: screen.count == 2 and not screen.generating, "two variants")
        assert [c.display for c in screen.columns] == [True, True, False, False]
        await pilot.press("m")  # back to draws of the loaded model
        await until(pilot, lambda: screen.against is None and not screen.generating, "draws again")


async def test_escape_stops_then_goes_back(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        app.studio.param("max_tokens").value = 2048
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare view")
        screen = app.screen
        await until(pilot, lambda: sum(v.tokens for v in screen.job.variants) > 3, "some text")
        await pilot.press("escape")
        await until(pilot, lambda: not screen.generating, "the variants to stop")
        assert {v.finish for v in screen.job.variants} <= {"cancelled", "eos"}
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.studio, "the studio")
        assert not app.busy


RECOMMENDS = {"temperature": 0.0, "top_k": 5, "repetition_penalty": 1.3, "repeat_last_n": 16}


@pytest.fixture
def recommending_second(installed_second):
    """'tiny-two', recommending its own sampling (RECOMMENDS) in its metadata."""
    import json

    path = installed_second / "metadata.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"sampling": RECOMMENDS}))
    return installed_second


def test_the_other_model_starts_from_its_own_settings_except_what_the_user_changed(recommending_second):
    from helium_tui.screens.compare import other_settings

    untouched = SamplingParams(seed=3)  # the loaded model (no recommendation) at the engine's defaults
    assert other_settings(untouched, {}, "tiny-two") == SamplingParams(**RECOMMENDS, seed=3)
    changed = replace(untouched, temperature=1.0, max_new_tokens=32)  # the user moved two sliders
    assert other_settings(changed, {}, "tiny-two") == SamplingParams(**RECOMMENDS | {"temperature": 1.0},
                                                                     max_new_tokens=32, seed=3)  # fmt: skip
    # a value the user left at the loaded model's own recommendation is not a choice: the other's applies
    mine = {"temperature": 0.5}
    assert other_settings(replace(untouched, temperature=0.5), mine, "tiny-two").temperature == 0.0


@pytest.mark.slow
async def test_compare_against_a_model_with_its_own_defaults_says_each_sides_settings(
    tiny_bundle, recommending_second
):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(160, 30)) as pilot:
        await loaded(app, pilot)
        screen = await open_compare(app, pilot)  # the user set temperature 1, top-p 1, repetition 1, 32 tokens
        await pilot.press("m")  # against tiny-two
        await until(pilot, lambda: screen.against == "tiny-two" and not screen.generating, "tiny-two's variants")
        job = screen.job
        user = {"temperature": 1.0, "top_p": 1.0, "repetition_penalty": 1.0, "max_new_tokens": 32}
        assert job.params == SamplingParams(**user, seed=7)
        assert job.other_params == SamplingParams(**RECOMMENDS | user, seed=7)  # top-k 5 and window 16: its own
        theirs = told_rows(open_session(str(recommending_second), "cpu", "float32").generator, PROMPT, 1,
                           job.other_params)  # fmt: skip
        assert job.variants[2].text == theirs[0]
        titles = [str(c.border_title) for c in screen.columns[:3]]
        assert titles[:2] == ["1 · tiny-bundle · T 1", "2 · tiny-bundle · T 1"]
        assert titles[2] == "3 · tiny-two · T 1 · top-k 5"  # its own top-k, the user's temperature
