"""llama.cpp next to Helium in `helium bench decode --vs-llama-cpp`: the same random weights, thread count and
prompt, decoded greedily by llama-cpp-python in a worker process, one round after each of Helium's.

The worker keeps its model loaded between rounds and waits on a pipe, so it takes no CPU while Helium runs
(and a crash of llama.cpp, e.g. SIGILL in a kernel this CPU lacks, cannot take the benchmark down). The worker
reports llama.cpp's system info, and `native_problem` says when that build lacks what this CPU has: a
GGML_NATIVE=OFF build has no AVX-512/VNNI/AMX kernels and no Q8_0 repacking, a weaker baseline than users get.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from engine.generation.threads import users_environment

GGUF_TYPES = {"int8": "q8_0", "int4": "q4_0", torch.bfloat16: "bf16", torch.float32: "f32"}  # Helium's weights -> llama.cpp's
# llama.cpp's AMX kernel dies with SIGILL on batched Q8_0 matmuls on these VMs: feed the prompt one token at a
# time (decode speed, which is what we compare, is unaffected)
LLAMA_BATCH = {"n_batch": 1, "n_ubatch": 1}
# /proc/cpuinfo flag -> the system-info feature a native llama.cpp build shows on a CPU with it
NATIVE_FEATURES = {"avx2": "AVX2", "avx512f": "AVX512", "avx512_vnni": "AVX512_VNNI", "avx512_bf16": "AVX512_BF16",
                   "amx_int8": "AMX_INT8"}  # fmt: skip
REBUILD = 'CMAKE_ARGS="-DGGML_NATIVE=ON" pip install --force-reinstall --no-cache-dir llama-cpp-python'


def llama_cpp_missing() -> str | None:
    """Why llama.cpp cannot be compared here (None when llama-cpp-python is importable)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return (
            "llama-cpp-python is not installed (pip install llama-cpp-python), so llama.cpp was not measured"
        )
    return None


def parse_system_info(text: str) -> dict[str, str]:
    """llama_print_system_info()'s "CPU : SSE3 = 1 | AVX512 = 1 | ... |" as {"SSE3": "1", "AVX512": "1", ...}
    (a backend's name before " : " is dropped; segments that are no KEY = VALUE are skipped)."""
    features: dict[str, str] = {}
    for part in text.split("|"):
        key, eq, value = part.rpartition(" : ")[2].partition("=")
        if eq and key.strip():
            features[key.strip()] = value.strip()
    return features


def enabled_features(system_info: str) -> str:
    """The features a llama.cpp build has on, space-separated ("AVX2 AVX512 ... REPACK"), for a table row."""
    return " ".join(k for k, v in parse_system_info(system_info).items() if v == "1")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """This CPU's feature flags (empty where /proc/cpuinfo is unreadable, e.g. not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return {
        flag
        for line in text.splitlines()
        if line.startswith("flags")
        for flag in line.split(":", 1)[1].split()
    }


def native_problem(system_info: str, flags: set[str]) -> str | None:
    """Why this llama.cpp build is not native to a CPU with flags (None when it uses all NATIVE_FEATURES the
    CPU has): the features it was built without, and how to rebuild."""
    built = parse_system_info(system_info)
    missing = [feat for flag, feat in NATIVE_FEATURES.items() if flag in flags and built.get(feat) != "1"]
    if not missing:
        return None
    return (
        f"llama.cpp was built without {', '.join(missing)}, which this CPU has (a GGML_NATIVE=OFF or generic "
        f"build): its speed understates llama.cpp's; rebuild it with {REBUILD}"
    )


def check_comparable(device: torch.device, batch_size: int, window: int | None, context: int) -> None:
    """ValueError when llama.cpp cannot run the same benchmark: CPU only, batch 1, full causal attention."""
    if device.type != "cpu":
        raise ValueError("--vs-llama-cpp compares CPU decoding: use --device cpu")
    if batch_size != 1:
        raise ValueError("--vs-llama-cpp compares batch-1 decoding: use --batch-size 1")
    if window is not None and window < context:
        raise ValueError("llama.cpp's Llama attends over the whole context: add --window 0 to compare")


def random_bundle(model: torch.nn.Module):
    """A Bundle around model with a stand-in byte-level tokenizer of its vocabulary size (the GGUF exporter
    needs one; the benchmark only ever feeds token ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from engine.bundles.bundle import Bundle
    from engine.model.tokenizer import TextTokenizer

    vocab_size = model.config.vocab_size
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = (alphabet + ["to"] + [f"tok{i}" for i in range(vocab_size)])[
        :vocab_size
    ]  # llama.cpp wants a merge
    hf = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[("t", "o")]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    return Bundle(model, TextTokenizer(hf, None, None), model.config, {"data": "random weights"})


class LlamaRounds:
    """A running llama.cpp worker: `run_round()` decodes once; `report(helium)` sums the rounds up."""

    def __init__(self, proc: subprocess.Popen, gguf_type: str, log) -> None:
        self.proc, self.gguf_type, self.log = proc, gguf_type, log  # log: the worker's stderr
        self.runs: list[float] = []
        self.system_info = ""  # llama.cpp's llama_print_system_info(), from the worker

    def run_round(self) -> None:
        """One greedy decode in the worker (Helium waits meanwhile)."""
        self.runs.append(float(self._ask("run")["tokens_per_s"]))

    def _ask(self, command: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.log.seek(0)
            tail = (self.log.read().strip().splitlines() or ["no message"])[-1]
            raise ValueError(f"the llama.cpp worker failed (exit code {code}): {tail}")
        return json.loads(line)

    def report(self, helium_tokens_per_s: float) -> dict:
        """The comparison for DecodeBench.llama_cpp."""
        median = statistics.median(self.runs)
        return {
            "type": self.gguf_type.upper(),
            "tokens_per_s": median,
            "runs": self.runs,
            "helium_over_llama_cpp": helium_tokens_per_s / median,
            "system_info": self.system_info,
            "not_native": native_problem(self.system_info, cpu_flags()),  # None for a native build
        }


@contextmanager
def llama_rounds(float_model: torch.nn.Module, weights: str | torch.dtype, threads: int, prompt: list[int],
                 new_tokens: int):  # fmt: skip
    """Export float_model (the benchmark's random weights, float32) as GGUF in the type matching Helium's
    weights (int8 -> Q8_0, bf16 -> BF16, float32 -> F32) and start a worker on it; yields LlamaRounds."""
    from engine.formats.gguf import export_gguf

    gguf_type = GGUF_TYPES[weights]
    with tempfile.TemporaryDirectory(prefix="helium-bench-llama-") as tmp:
        path = export_gguf(random_bundle(float_model), Path(tmp) / f"bench-{gguf_type}.gguf", gguf_type)
        float_model.to("meta")  # its weights are in the file now: free them for the benchmark's run
        (Path(tmp) / "prompt.json").write_text(json.dumps(prompt))
        cmd = [sys.executable, "-m", "benchmarks.llama_cpp", str(path), "--threads", str(threads),
               "--prompt", str(Path(tmp) / "prompt.json"), "--new-tokens", str(new_tokens)]  # fmt: skip
        log = open(Path(tmp) / "worker.log", "w+")  # llama.cpp talks on stderr even when asked not to
        # llama.cpp runs as a user runs it: without the passive OpenMP waiting Helium asks for itself
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                env=users_environment())  # fmt: skip
        rounds = LlamaRounds(proc, gguf_type, log)
        try:
            rounds.system_info = rounds._ask("ready")["system_info"]  # loaded and warmed up
            yield rounds
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            log.close()


def decode_speed(times: list[float]) -> float:
    """Tokens/s from the arrival time of each token: (n - 1) tokens between the first and the last."""
    return (len(times) - 1) / (times[-1] - times[0])


def greedy_decode(llm, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    """llama.cpp's greedy decode of new_tokens after prompt (end tokens ignored): its tokens/s and tokens."""
    llm.reset()
    times, tokens = [], []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        times.append(time.perf_counter())
        tokens.append(token)
        if len(tokens) == new_tokens:
            break
    return decode_speed(times), tokens


def worker(gguf: Path, threads: int, prompt: list[int], new_tokens: int) -> None:
    """Load the GGUF once, then answer each line on stdin with one JSON line: "run" with its tokens/s,
    anything else ("ready") with llama.cpp's system info."""
    n_ctx = len(prompt) + new_tokens + 8
    llm = open_llama(gguf, n_ctx, threads)
    greedy_decode(llm, prompt, min(8, new_tokens))  # warm-up
    for line in sys.stdin:
        if line.strip() == "run":
            answer: dict = {"tokens_per_s": greedy_decode(llm, prompt, new_tokens)[0]}
        else:
            answer = {"system_info": system_info()}
        print(json.dumps(answer), flush=True)


def open_llama(gguf: Path, n_ctx: int, threads: int):
    """llama-cpp-python's Llama on gguf as the benchmarks run it: threads for decode and prompt, one token
    per batch (LLAMA_BATCH), quiet."""
    import llama_cpp

    return llama_cpp.Llama(
        str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False, **LLAMA_BATCH
    )


def system_info() -> str:
    """The loaded llama.cpp's llama_print_system_info(), stripped."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    return (info.decode(errors="replace") if isinstance(info, bytes) else str(info)).strip()


def main(argv: list[str] | None = None) -> None:
    """The worker's command line (started by llama_rounds)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.llama_cpp")
    ap.add_argument("gguf", type=Path)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--prompt", type=Path, required=True)
    ap.add_argument("--new-tokens", type=int, required=True)
    args = ap.parse_args(argv)
    worker(args.gguf, args.threads, json.loads(args.prompt.read_text()), args.new_tokens)


if __name__ == "__main__":
    main()
