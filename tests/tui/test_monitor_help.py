"""f1 and ctrl+p on the library and the training monitor, in the real app: each lists its own keys and
commands, never the studio's."""

from __future__ import annotations

import pytest

from helium_tui.app import HeliumApp
from helium_tui.screens.library import LibraryScreen
from helium_tui.screens.training.screen import TrainingScreen
from tests.tui.monitor_host import wait_for


def titles(app: HeliumApp) -> set[str]:
    return {command.title for command in app.get_system_commands(app.screen)}


async def open_help(app: HeliumApp, pilot, screen) -> None:
    await pilot.press("f1")
    await wait_for(
        pilot, lambda: type(app.screen).__name__ == "HelpScreen" and app.screen.is_mounted, "the help page"
    )
    assert app.screen.about is screen
    heading = app.screen.heading
    await pilot.press("escape")
    await wait_for(pilot, lambda: app.screen is screen, "the screen again")
    return heading


@pytest.mark.slow
async def test_the_library_has_its_own_keys_and_commands(tmp_path, helium_home):
    app = HeliumApp(stories_dir=tmp_path / "stories")  # no model installed: the library still opens
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+l")
        await wait_for(
            pilot, lambda: isinstance(app.screen, LibraryScreen) and app.screen.is_mounted, "the library"
        )
        await pilot.pause()
        assert {"Back", "Reload"} <= titles(app) and not {"Tell", "Retell"} & titles(app)
        assert await open_help(app, pilot, app.screen) == "Story library"


async def test_the_monitor_has_its_own_keys_and_commands(helium_home):
    app = HeliumApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+t")
        await wait_for(
            pilot, lambda: isinstance(app.screen, TrainingScreen) and app.screen.is_mounted, "the monitor"
        )
        await pilot.pause()
        commands = titles(app)
        assert {
            "Start run",
            "Attach to run",
            "Resume run",
            "Install model",
            "Back (run continues)",
        } <= commands
        assert {
            "Fine-tune",
            "Start fine-tune",
        } <= commands and "New model" not in commands  # ctrl+f: the other form
        assert "Stop run" not in commands and not {"Tell", "Retell"} & commands  # no run going: no Stop
        assert await open_help(app, pilot, app.screen) == "Training monitor"
