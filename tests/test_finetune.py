"""Fine-tuning: data prepared with a model's tokenizer, `helium train --init-from`, and what it must keep.

The evidence test fine-tunes the shipped model on stories about new characters and measures, on held-out
stories, that it learned them while its loss on TinyStories-style text stays within a stated bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle, save_bundle
from engine.generation.evaluate import evaluate_text
from engine.model.tinyslm import TinySLM
from engine.model.tokenizer import TextTokenizer
from engine.paths import assets_dir
from helium_tui.cli import app
from tests.conftest import TINY, TINYSTORIES, make_stories, needs_shared, tiny_train_config
from tests.fakes import read_events
from trainer.config import TrainConfig
from trainer.finetune import (
    FINETUNE_DEFAULTS,
    FINETUNE_EPOCHS,
    MIN_FINETUNE_STEPS,
    TooLittleText,
    collect_stories,
    finetune_config,
    finetune_name,
    prepare_finetune_data,
    read_base,
)
from trainer.prepare import PrepareOptions, prepare
from trainer.train import run_training

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = assets_dir() / "helium-default"
runner = CliRunner()

NEW_NAMES = ["Zorbin", "Quilla", "Fennick", "Marlowe", "Tibbet", "Oona"]
PLACES = ["the Glimmerwood", "Puddle Hill", "the Moss Harbor", "Lantern Lane"]
PETS = [("a blue newt", "Pim"), ("a fox", "Rusk"), ("an owl", "Hoot"), ("a snail", "Dot")]
THINGS = ["silver bell", "red kite", "lost key", "golden shell"]


def new_stories(n: int, seed: int) -> list[str]:
    """Stories about characters, places and pets the shipped model has never seen (deterministic)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(NEW_NAMES, 2)
        place, (pet, pet_name), thing = rng.choice(PLACES), rng.choice(PETS), rng.choice(THINGS)
        out.append(
            f"{a} lived in {place} with {pet} called {pet_name}. Every morning {a} and {b} walked to the old "
            f'bridge. One day {b} said, "{a}, let us find the {thing}!" They looked under stones and behind '
            f"trees. At last {pet_name} found the {thing} in a nest. {a} was so happy, and all of {place} "
            f'sang. {b} smiled and said, "Best friends find everything."'
        )
    return out


def write_eot(path: Path, stories: list[str]) -> Path:
    """Stories in TinyStories' own format (an `<|endoftext|>` line after each)."""
    path.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


def tree_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under directory (to show a base model is never modified)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def nats(bundle: Path, text: str) -> float:
    """A bundle's mean loss (nats/token) on text, float32 on the CPU."""
    b = load_bundle(bundle)
    return evaluate_text(b.model, b.tokenizer, text).nats_per_token


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (see conftest.one_thread)."""


def tiny_base(directory: Path, tokenizer: TextTokenizer, bos: int | None, eos: int | None, seed: int = 0) -> Path:
    """A tiny random bundle with tokenizer and the given start/end tokens."""
    torch.manual_seed(seed)
    model = TinySLM(TINY.with_(vocab_size=tokenizer.vocab_size))
    return save_bundle(directory, model, TextTokenizer(tokenizer.hf, bos, eos), {"data": "synthetic"})


def ft_cfg(base: Path, data: Path, out: Path, **kw) -> TrainConfig:
    """The shared tiny training config as a fine-tune of base."""
    base_kw = dict(preset="", init_from=str(base), batch_size=4, max_steps=10, warmup_steps=3, eval_interval=5)
    return tiny_train_config(data, out, **(base_kw | kw))


@pytest.fixture
def tiny_data(tmp_path, tiny_bundle) -> Path:
    """make_stories(200) prepared for tiny_bundle (its tokenizer, `<|endoftext|>` = 0 around stories)."""
    src = write_eot(tmp_path / "stories.txt", make_stories(200))
    prepare([src], tmp_path / "data", PrepareOptions(tokenizer=str(tiny_bundle), val_fraction=0.2))
    return tmp_path / "data"


# ---------------------------------------------------------------- data prepared for a model


@pytest.mark.parametrize(("bos", "eos"), [(0, 0), (1, 1), (1, 2), (None, 2)])
def test_prepare_for_a_model_uses_its_tokenizer_and_its_start_end_tokens(tmp_path, tiny_tokenizer, bos, eos):
    base = tiny_base(tmp_path / "base", tiny_tokenizer, bos, eos)
    stories = make_stories(30)
    src = write_eot(tmp_path / "s.txt", stories)
    m = prepare([src], tmp_path / "d", PrepareOptions(tokenizer=str(base), val_fraction=0)).manifest
    assert (tmp_path / "d" / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    assert (m["bos_id"], m["eos_id"], m["tokenizer_model"]) == (bos, eos, str(base.absolute()))
    assert m["eot_id"] == (bos if bos is not None else eos)
    expected = []
    for story in dict.fromkeys(stories):  # duplicates dropped, order kept
        ids = tiny_tokenizer.encode(story, add_bos=False)
        expected += ([bos] if bos is not None else []) + ids + ([eos] if eos not in (None, bos) else [])
    assert np.fromfile(tmp_path / "d" / "train_000.bin", dtype=np.uint16).tolist() == expected


def test_prepare_cli_takes_a_model_name_a_bundle_or_a_tokenizer_json(tmp_path, helium_home):
    src = write_eot(tmp_path / "s.txt", new_stories(40, 0))
    by_name = runner.invoke(app, ["data", "prepare", str(src), "--tokenizer", "helium-default", "--out", str(tmp_path / "a")])
    assert by_name.exit_code == 0, by_name.output
    assert "--init-from helium-default" in by_name.output
    by_dir = runner.invoke(app, ["data", "prepare", str(src), "--tokenizer", str(DEFAULT_MODEL), "--out", str(tmp_path / "b")])
    assert by_dir.exit_code == 0, by_dir.output
    json_file = tmp_path / "tok.json"
    json_file.write_bytes((DEFAULT_MODEL / "tokenizer.json").read_bytes())
    plain = runner.invoke(app, ["data", "prepare", str(src), "--tokenizer", str(json_file), "--out", str(tmp_path / "c")])
    assert plain.exit_code == 0, plain.output
    shards = [(tmp_path / d / "train_000.bin").read_bytes() for d in "abc"]
    assert shards[0] == shards[1] == shards[2]  # helium-default marks stories with <|endoftext|> = 0 too
    missing = runner.invoke(app, ["data", "prepare", str(src), "--tokenizer", "no-such-model", "--out", str(tmp_path / "e")])
    assert missing.exit_code == 2 and "no-such-model" in missing.stderr and len(missing.stderr.splitlines()) == 1


# ---------------------------------------------------------------- refusals


def test_a_mismatched_tokenizer_is_refused_with_the_fix(tmp_path, prepared_dir, tiny_bundle, capsys):
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "--init-from", str(tiny_bundle), "--data", str(prepared_dir), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "another tokenizer" in result.stderr and f"--tokenizer {tiny_bundle.absolute()}" in result.stderr
    assert not (out / "checkpoints").exists()


def test_data_with_other_start_end_tokens_is_refused(tmp_path, tiny_tokenizer, tiny_data):
    other = tiny_base(tmp_path / "other", tiny_tokenizer, 1, 2)  # the same tokenizer, other markers
    cmd = ["train", "--init-from", str(other), "--data", str(tiny_data), "--out", str(tmp_path / "run")]
    result = runner.invoke(app, cmd)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "start/end tokens 0/0" in result.stderr and f"--tokenizer {other.absolute()}" in result.stderr


def test_shape_options_that_contradict_the_base_are_refused(tmp_path, tiny_bundle, tiny_data):
    cases = {
        "--preset tiny": (["--preset", "tiny"], "contradicts"),  # tiny's hidden_dim is 176, the bundle's 128
        "--context 65": (["--context", "65"], "may only shrink"),  # the bundle's context is 64
    }
    for i, (args, message) in enumerate(cases.values()):
        out = tmp_path / f"run{i}"
        cmd = ["train", "--init-from", str(tiny_bundle), "--data", str(tiny_data), "--out", str(out), *args]
        result = runner.invoke(app, [*cmd, "--max-steps", "1", "--device", "cpu"])
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_too_little_text_is_refused_before_any_work(tmp_path, tiny_bundle):
    base = read_base(tiny_bundle)
    nineteen = list(dict.fromkeys(new_stories(100, 0)))[:19]
    with pytest.raises(TooLittleText, match="only 19 stories"):
        prepare_finetune_data(base, tmp_path / "d", texts=nineteen * 2 + [""])
    assert not (tmp_path / "d").exists()
    with pytest.raises(TooLittleText, match="too little text"):  # 20 tiny stories hold no val window
        prepare_finetune_data(base, tmp_path / "d", texts=[f"Story {i}." for i in range(20)])


# ---------------------------------------------------------------- the run


def test_finetune_starts_from_the_base_and_records_it(tmp_path, tiny_bundle, tiny_data):
    before = tree_digest(tiny_bundle)
    out = tmp_path / "run"
    cmd = ["train", "--init-from", str(tiny_bundle), "--data", str(tiny_data), "--out", str(out)]
    result = runner.invoke(app, [*cmd, "--max-steps", "6", "--context", "32", "--device", "cpu", "--log-interval", "2"])
    assert result.exit_code == 0, result.output
    assert tree_digest(tiny_bundle) == before  # the user's base model is never modified

    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["init_from"] == str(tiny_bundle.absolute()) and cfg["preset"] == ""
    for key, value in FINETUNE_DEFAULTS.items():
        assert cfg[key] == value
    start = next(e for e in read_events(out / "events.jsonl") if e["event"] == "start")
    assert start["preset"] == "tiny-bundle fine-tune" and start["context"] == 32

    tuned = out / "bundle"
    meta = json.loads((tuned / "metadata.json").read_text())
    assert meta["base_model"]["name"] == "tiny-bundle" and meta["base_model"]["path"] == str(tiny_bundle.absolute())
    weights = (tiny_bundle / "model.safetensors").read_bytes()
    assert meta["base_model"]["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    assert meta["tuned_on"]["data"] == str(tiny_data.resolve()) and meta["tuned_on"]["sources"] == manifest["sources"]
    assert meta["tuned_on"]["stories"] == manifest["splits"]["train"]["stories"]
    assert json.loads((tuned / "config.json").read_text()) == json.loads((tiny_bundle / "config.json").read_text())


def test_the_first_step_starts_from_the_base_weights(tmp_path, tiny_bundle, tiny_data):
    from trainer.distributed import Dist
    from trainer.train import Trainer

    trainer = Trainer(ft_cfg(tiny_bundle, tiny_data, tmp_path / "run", dropout=0.0), "new", Dist(0, 1, 0))
    trainer.setup()
    try:
        base = load_bundle(tiny_bundle).model.state_dict()
        assert all(torch.equal(v, base[k]) for k, v in trainer.model.state_dict().items())
        assert trainer.model.training and trainer.s.model_config == read_base(tiny_bundle).config
    finally:
        trainer.report.close()


def test_resuming_a_finetune_is_bit_exact(tmp_path, tiny_bundle, tiny_tokenizer, tiny_data):
    common = dict(dropout=0.1, decay_steps=12, grad_accum=2, ckpt_interval=6)
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert run_training(ft_cfg(tiny_bundle, tiny_data, straight, max_steps=12, **common)) == 0
    assert run_training(ft_cfg(tiny_bundle, tiny_data, halves, max_steps=6, **common)) == 0
    result = runner.invoke(app, ["train", "--out", str(halves), "--resume", "--max-steps", "12"])
    assert result.exit_code == 0, result.output
    a = torch.load(straight / "checkpoints" / "step_000012.pt", weights_only=True)
    b = torch.load(halves / "checkpoints" / "step_000012.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert json.loads((halves / "train_config.json").read_text())["init_from"] == str(tiny_bundle)
    other = tiny_base(tmp_path / "other", tiny_tokenizer, 0, 0, seed=1)
    again = runner.invoke(
        app, ["train", "--out", str(halves), "--resume", "--init-from", str(other), "--max-steps", "13"]
    )
    assert again.exit_code == 2 and "keeps its base model" in again.stderr


@pytest.mark.slow
def test_a_background_finetune_stops_on_sigint_and_resumes(tmp_path, tiny_bundle, tiny_data):
    from engine.runs.runner import start_run

    out = tmp_path / "run"
    cfg = ft_cfg(tiny_bundle, tiny_data, out, max_steps=100_000, log_interval=1, eval_interval=0, ckpt_interval=0)
    handle = start_run(cfg.to_dict(), out, env={"OMP_NUM_THREADS": "1"})  # what --watch and the studio start
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(e.event == "step" for e in handle.poll()):
        time.sleep(0.2)
    handle.request_stop()  # SIGINT
    assert handle.wait(120) and handle.status() == "stopped"
    step = read_events(out / "events.jsonl")[-1]["step"]
    assert 0 < step < 100_000
    assert run_training(TrainConfig.load(out / "train_config.json").with_(max_steps=step + 2), resume=True) == 0
    events = read_events(out / "events.jsonl")
    assert events[-1]["status"] == "finished" and (out / "bundle" / "model.safetensors").is_file()
    assert [e["step"] for e in events if e["event"] == "start"] == [0, step]


@pytest.mark.slow
def test_two_gloo_ranks_finetune_from_the_same_base(tmp_path, tiny_bundle, tiny_data):
    out = tmp_path / "ddp"
    out.mkdir()
    config = out / "train_config.json"
    config.write_text(json.dumps(ft_cfg(tiny_bundle, tiny_data, out, batch_size=4, max_steps=4).to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    proc = subprocess.run(
        [*cmd, "-m", "trainer.train", "--config", str(config)], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(out / "events.jsonl")
    assert events[0]["world_size"] == 2 and events[0]["init_from"] == str(tiny_bundle)
    assert any(e["event"] == "log" and "2 ranks hold identical weights" in e["message"] for e in events)
    assert events[-1]["status"] == "finished"
    assert json.loads((out / "bundle" / "metadata.json").read_text())["base_model"]["name"] == "tiny-bundle"


# ---------------------------------------------------------------- the studio's calls


def test_prepare_finetune_data_from_library_texts_and_a_folder(tmp_path, tiny_bundle):
    folder = tmp_path / "class"
    (folder / "week2").mkdir(parents=True)
    stories = new_stories(300, 1)
    unique = list(dict.fromkeys(stories))
    (folder / "one.txt").write_text(unique[0] + "\n\nA second paragraph of the same story.\n")
    (folder / "two.md").write_text(f"{unique[1]}\n<|endoftext|>\n{unique[2]}\n<|endoftext|>\n")
    (folder / "week2" / "more.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in unique[3:10]))
    (folder / "notes.pdf").write_bytes(b"%PDF ignored")
    library = unique[10:40] + unique[3:5]  # two repeated across the sources
    found = collect_stories(library, folder)
    assert found[:30] == unique[10:40] and len(found) == 40
    assert unique[0] + "\n\nA second paragraph of the same story." in found  # a .txt file is one story

    data = prepare_finetune_data(read_base(tiny_bundle), tmp_path / "data", texts=library, folder=folder)
    assert data.train_stories + data.val_stories == 40 and data.val_stories >= 4
    assert data.manifest["tokenizer_model"] == str(tiny_bundle.absolute())
    lines = (tmp_path / "data" / "stories.jsonl").read_text().splitlines()
    assert len(lines) == data.train_stories
    again = prepare_finetune_data(read_base(tiny_bundle), tmp_path / "data", texts=library, folder=folder)
    assert again.manifest == data.manifest  # an unchanged corpus is a no-op

    cfg = finetune_config(read_base(tiny_bundle), data.data_dir, tmp_path / "run")
    expected = max(MIN_FINETUNE_STEPS, -(-FINETUNE_EPOCHS * data.train_tokens // (8 * 64)))
    assert cfg.max_steps == expected and cfg.init_from == str(tiny_bundle.absolute())
    assert finetune_config(read_base(tiny_bundle), data.data_dir, tmp_path / "run", max_steps=7).max_steps == 7
    assert run_training(cfg.with_(max_steps=2, device="cpu", dtype="float32")) == 0


def test_finetune_name_and_help_state_the_defaults():
    import datetime

    from helium_tui.commands.train import FINETUNE_HELP

    assert finetune_name("helium-default", datetime.date(2026, 11, 30)) == "helium-default-tuned-2026-11-30"
    flags = {"lr": "--lr", "warmup_steps": "--warmup", "batch_size": "--batch-size",
             "eval_interval": "--eval-interval", "eval_batches": "--eval-batches"}  # fmt: skip
    assert set(flags) == set(FINETUNE_DEFAULTS)
    for key, flag in flags.items():
        stated = re.search(rf"{flag} ([0-9.e-]+)[,; ]", FINETUNE_HELP)
        assert stated and float(stated.group(1)) == FINETUNE_DEFAULTS[key], flag
    assert f"{FINETUNE_EPOCHS} passes" in FINETUNE_HELP and f"at least {MIN_FINETUNE_STEPS} steps" in FINETUNE_HELP


def test_finetune_module_leaves_torch_unloaded():
    code = "import sys, trainer.finetune; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- evidence on the shipped model

# Bounds this test holds the shipped model to. Fine-tuning (the defaults, 20 steps of 8 x 128 tokens) on 100
# stories about new characters must cut the loss on held-out stories of that corpus at least in half, and may
# raise the loss on TinyStories-style text by at most MAX_FORGETTING nats/token. Measured on the dev CPU
# (docs/BENCHMARKS.md): held-out 5.31 -> 1.16, TinyStories valid (first 20k chars) 2.386 -> 2.559 (+0.17),
# make_stories text 2.447 -> 2.487 (+0.04).
MAX_FORGETTING = 0.3


@pytest.fixture(scope="module")
def shipped_finetune(tmp_path_factory) -> dict[str, Path | list[str]]:
    """helium-default fine-tuned (the fine-tune defaults, 20 steps, context 128) on 100 new-character stories."""
    tmp = tmp_path_factory.mktemp("shipped-ft")
    train = new_stories(100, 0)
    held_out = [s for s in dict.fromkeys(new_stories(40, 99)) if s not in set(train)][:20]
    src = write_eot(tmp / "corpus.txt", train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepare([src], tmp / "data", PrepareOptions(tokenizer="helium-default", val_fraction=0.1))
        cfg = finetune_config(read_base("helium-default"), tmp / "data", tmp / "run", max_steps=20, context=128)
        assert run_training(cfg.with_(device="cpu", dtype="float32", seed=0)) == 0
    finally:
        torch.set_num_threads(threads)
    return {"tuned": tmp / "run" / "bundle", "held_out": held_out}


def _score_both(shipped_finetune, text: str) -> tuple[float, float]:
    return nats(DEFAULT_MODEL, text), nats(shipped_finetune["tuned"], text)


@pytest.mark.slow
def test_finetuning_the_shipped_model_learns_held_out_stories(shipped_finetune):
    before, after = _score_both(shipped_finetune, "\n<|endoftext|>\n".join(shipped_finetune["held_out"]))
    assert after < before / 2, (before, after)


def test_finetuning_keeps_the_loss_on_tinystories_style_text(shipped_finetune):
    before, after = _score_both(shipped_finetune, "\n<|endoftext|>\n".join(make_stories(30, seed=5)))
    assert after - before < MAX_FORGETTING, (before, after)


@needs_shared(TINYSTORIES / "valid.txt", covers="fine-tuning keeps the loss on TinyStories' validation text")
@pytest.mark.slow
def test_finetuning_keeps_the_loss_on_tinystories_valid(shipped_finetune):
    text = (TINYSTORIES / "valid.txt").read_text(encoding="utf-8")[:20_000]
    before, after = _score_both(shipped_finetune, text)
    assert after - before < MAX_FORGETTING, (before, after)


def test_lora_probe_adapters_start_as_the_base_and_train_alone(tiny_model):
    from benchmarks.lora_probe import add_lora, measure

    x = torch.randint(0, tiny_model.config.vocab_size, (2, 16))
    before = tiny_model(x)
    add_lora(tiny_model, rank=4)
    assert torch.equal(tiny_model(x), before)  # B starts at zero: the same model until it trains
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".a", ".b")) for n in trainable)
    result = measure("tiny", rank=4, batch=2, steps=1)
    assert result["mode"] == "lora r=4" and 0 < result["trainable"] < 50_000
