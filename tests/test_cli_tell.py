"""`helium tell`: streaming output, --json, stdin prompts and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from helium_tui.cli import app
from tests.stories import told

runner = CliRunner()
GREEDY = ["--temperature", "0", "--dtype", "float32", "--max-tokens", "12"]


def _tell(*args, input=None):
    return runner.invoke(app, ["tell", *args], input=input)


def test_tell_streams_prompt_and_story(tiny_bundle, tiny_model, tiny_tokenizer):
    from engine.generation.generate import Generator, SamplingParams

    r = _tell("Lily had", "--model", str(tiny_bundle), *GREEDY, "--repetition-penalty", "1.0")
    assert r.exit_code == 0, r.output
    expected = told(
        Generator(tiny_model, tiny_tokenizer), "Lily had", SamplingParams(max_new_tokens=12, temperature=0, repetition_penalty=1.0)
    )
    assert r.output == "Lily had" + expected.text + "\n"


def test_tell_json_reports_stats(tiny_bundle):
    r = _tell("Tom", "--model", str(tiny_bundle), *GREEDY, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    for key in ("text", "prompt_tokens", "generated_tokens", "ttft_s", "tokens_per_s", "model", "device", "dtype"):
        assert key in data
    assert data["device"] == "cpu" and data["dtype"] == "float32" and data["model"] == "tiny-bundle"


def test_tell_reads_prompt_from_stdin(tiny_bundle):
    a = _tell("-", "--model", str(tiny_bundle), *GREEDY, "--json", input="Sue found a cake\n")
    b = _tell("Sue found a cake", "--model", str(tiny_bundle), *GREEDY, "--json")
    assert json.loads(a.output)["text"] == json.loads(b.output)["text"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1"], "temperature must be a number from 0 (greedy) to 100"),
        (["--top-p", "0"], "top-p must be in (0, 1]"),
        (["--top-p", "1.5"], "top-p must be in (0, 1]"),
        (["--model", "no-such-model"], "no-such-model: no such model bundle"),
        (["--dtype", "float64"], "unknown dtype"),
        (["--device", "cuda:0"], "cuda"),
    ],
)
def test_bad_values_give_one_line_and_exit_2(tiny_bundle, helium_home, args, message):
    full = ["Tom", "--model", str(tiny_bundle), *args] if "--model" not in args else ["Tom", *args]
    r = runner.invoke(app, ["tell", *full])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in r.output


def test_unreadable_model_file_is_a_clear_error(tiny_bundle):
    (tiny_bundle / "model.safetensors").write_bytes(b"garbage")
    r = _tell("Tom", "--model", str(tiny_bundle))
    assert r.exit_code == 2 and "model.safetensors" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_subprocess_error_has_no_traceback(tmp_path):
    env_home = tmp_path / "home"
    r = subprocess.run(
        [sys.executable, "-m", "helium_tui.cli", "tell", "Hi", "--model", str(tmp_path / "missing")],
        capture_output=True, text=True, env={"HELIUM_HOME": str(env_home), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("helium: error:")


def _tell_on_a_terminal(*args: str) -> bytes:
    """Run `helium tell` with stdout on a pseudo-terminal and return everything it wrote there."""
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "helium_tui.cli", "tell", *args], stdout=follower, stderr=subprocess.PIPE
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        out += chunk
    proc.wait(60)
    os.close(leader)
    return out


@pytest.mark.slow
def test_control_sequences_never_reach_a_terminal_unless_raw(tiny_bundle):
    hostile = "\x1b]0;TITLE\x1b\\\x1b[2JOnce \x1b]52;c;aGk=\x07upon"
    out = _tell_on_a_terminal(hostile, "--model", str(tiny_bundle), "--max-tokens", "20", "--seed", "1")
    assert b"\x1b" not in out and b"\x07" not in out and "\ufffd".encode() in out and b"upon" in out
    raw = _tell_on_a_terminal(hostile, "--model", str(tiny_bundle), "--max-tokens", "2", "--raw")
    assert b"\x1b]0;TITLE" in raw


def test_invalid_utf8_prompts_and_odd_devices_are_one_line_errors(tiny_bundle):
    r = subprocess.run([sys.executable, "-m", "helium_tui.cli", "tell", "-", "--model", str(tiny_bundle)],
                       input=b"Once \xff\xfe", capture_output=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and b"not UTF-8" in r.stderr
    for device in ("meta", "xla", "nonsense"):
        r = _tell("Tom", "--model", str(tiny_bundle), "--device", device)
        assert r.exit_code == 2 and "unknown device" in r.stderr


def test_ctrl_c_ends_the_story_line_before_the_error(monkeypatch, capfd):
    # the story's text, a newline, then the error on a line of its own (it was appended to the last word)
    import engine.generation.session as session_module
    from helium_tui.commands.tell import tell

    class Interrupted:
        result = None

        def __iter__(self):
            yield type("Delta", (), {"text": " and then"})()
            raise KeyboardInterrupt

    class FakeSession:
        sampling: dict = {}
        compile, compile_note = False, None
        generator = type("G", (), {"stream": lambda self, prompt, params: Interrupted()})()

    monkeypatch.setattr(session_module, "open_session", lambda *a, **k: FakeSession())
    import typer

    with pytest.raises(typer.Exit) as exit_info:
        tell("Once", model="", max_tokens=None, temperature=None, top_k=None, top_p=None, repetition_penalty=None,
             frequency_penalty=None, presence_penalty=None, repeat_last_n=None, penalize_prompt=None, seed=None,
             device="cpu", dtype="auto", compile=False, quantize="auto", threads=None, as_json=False, raw=True)
    out, err = capfd.readouterr()
    assert exit_info.value.exit_code == 130
    assert out == "Once and then\n" and err.startswith("helium: error: interrupted")
