"""`helium bench train` and `helium train` count parameters alike (tied embeddings once); the vocabulary is
what differed: train takes the data's tokenizer (4,096 by default), the benchmark the preset's (tiny: 1,024,
so 0.16M against 0.35M). The benchmark now says its vocabulary and `--vocab-size` times train's model.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from engine.model.tinyslm import TinySLM
from helium_tui.cli import app
from trainer.config import TrainConfig
from trainer.prepare import PrepareOptions


def run(*extra: str) -> tuple[dict, str]:
    """bench train on tiny for one short step; its JSON report and its table (one line)."""
    args = ["bench", "train", "--preset", "tiny", "--steps", "1", "--warmup", "0", "--batch-size", "1"]
    result = CliRunner().invoke(app, [*args, "--context", "16", "--device", "cpu", "--no-compile", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1]), " ".join(result.stderr.split())


def test_bench_train_counts_what_train_counts():
    data_vocab = PrepareOptions().vocab_size  # what a default `helium data prepare` trains
    report, table = run("--vocab-size", str(data_vocab))
    trained = TinySLM(TrainConfig(preset="tiny").model_config(data_vocab))  # what `helium train` builds on it
    assert report["params"] == trained.num_params() == 354_624 and report["vocab_size"] == 4096
    assert "tiny (0.35M params, vocab 4,096)" in table  # train prints 0.35M too
    report, table = run()  # the preset's own vocabulary, said in the title
    assert report["params"] == TinySLM(TrainConfig(preset="tiny").model_config(1024)).num_params()
    assert "tiny (0.16M params, vocab 1,024)" in table
    result = CliRunner().invoke(app, ["bench", "train", "--vocab-size", "0"])
    assert result.exit_code == 2 and "--vocab-size" in result.stderr
