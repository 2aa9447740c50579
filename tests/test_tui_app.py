"""App-level behaviour: the command line, TEXTUAL_FPS, kernel compilation status, the
command palette and the keys panel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from textual.binding import Binding

from cllm.tui import __main__ as main_module
from cllm.tui import app as app_module
from tests.tui_helpers import FakeEngine, make_app, press, wait_for

ROOT = Path(__file__).parents[1]


def fps_in_subprocess(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TEXTUAL_FPS"}
    if env_value is not None:
        env["TEXTUAL_FPS"] = env_value
    code = "import cllm.tui.app, textual.constants as c; print(c.MAX_FPS)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_textual_fps_defaults_to_20_unless_the_user_set_it():
    assert fps_in_subprocess(None) == "20"
    assert fps_in_subprocess("60") == "60"


def test_command_line(monkeypatch, tmp_path):
    seen: dict = {}

    def fake_run(self):
        seen.update(models_dir=self.models_dir, model_path=self.model_path)

    monkeypatch.setenv("CLLM_CONFIG_DIR", str(tmp_path))
    monkeypatch.setattr(app_module.CllmApp, "run", fake_run)
    assert main_module.main(["--models-dir", str(tmp_path), "--model", "x.cllm"]) == 0
    assert seen == {"models_dir": tmp_path, "model_path": Path("x.cllm")}


def test_python_m_cllm_tui_is_the_cllm_tui_command():
    out = subprocess.run([sys.executable, "-m", "cllm.tui", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage: cllm-tui") and "--models-dir" in out.stdout


async def test_first_compile_shows_a_status(tui_home):
    engine = FakeEngine(kernels_ready=False)
    app = make_app(tui_home, engine=engine, compile_kernels=True)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.activity == "compiling kernels…"
        bar = app.screen.query_one("#bar-activity")
        assert bar.display and "compiling kernels" in str(bar.render())
        engine.compile_gate.set()
        await wait_for(pilot, lambda: app.kernels_ready, what="the compile")
        assert app.activity == ""
        assert any(n.startswith("Kernels compiled in") for n in app.notices)


async def test_palette_lists_every_screen_and_action(tui_home):
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Train", "Generate", "Models", "Quick start", "Start training", "Stop training",
                      "Pause or resume training", "Generate text", "Stop generation", "Copy last output",
                      "Load highlighted model", "Keys", "Quit"):
            assert title in titles
        await press(pilot, "ctrl+p")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette", what="the palette")
        await press(pilot, *"models", "enter")
        await wait_for(pilot, lambda: app.current_mode == "models", what="the palette command")


async def test_keys_panel_and_every_binding_has_an_id(tui_home):
    from cllm.tui.screens.generate import GenerateScreen
    from cllm.tui.screens.models import ModelsScreen
    from cllm.tui.screens.train import TrainScreen

    for cls in (app_module.CllmApp, TrainScreen, GenerateScreen, ModelsScreen):
        for binding in cls.BINDINGS:
            assert isinstance(binding, Binding)
            assert binding.id, f"{cls.__name__}: {binding.key} has no id"
            assert binding.key not in ("ctrl+s", "ctrl+enter", "shift+enter", "ctrl+j")
    app = make_app(tui_home)
    async with app.run_test() as pilot:
        await press(pilot, "f1")
        assert app.screen.query("HelpPanel")
        await press(pilot, "f1")
        assert not app.screen.query("HelpPanel")
