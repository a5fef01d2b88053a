"""Evaluation harness pieces without Ray: the official greedy sampler settings, metrics, the paper's test sets."""
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import load_config
from common.tasks import countdown, sudoku
from deploy.evaluate import eval_prompts, eval_sampler, markdown_table, summarize

DATA = Path(__file__).resolve().parents[2] / "data"  # shipped with the project (data/README.md)


def test_official_eval_sampler_defaults():
    cfg = load_config(None, ["sampler.gen_length=256", "sampler.block_length=32", "sampler.steps=64"])
    s = eval_sampler(cfg)
    assert (s.gen_length, s.steps, s.block_length, s.temperature) == (256, 128, 32, 0.0)  # steps = gen_len / 2
    s = eval_sampler(cfg, cfg.eval.model_copy(update={"gen_length": 64, "steps": 64, "block_length": 64}))
    assert (s.gen_length, s.steps, s.block_length) == (64, 64, 64)
    dream = load_config(None, ["sampler.schedule=dream", "sampler.remasking=entropy", "sampler.top_k=50",
                               "sampler.top_p=0.95", "sampler.draw_mask=true", "sampler.confidence_dtype=model"])
    s = eval_sampler(dream)  # the run's sampler rules, greedy (top_p only matters when sampling)
    assert (s.schedule, s.remasking, s.top_k, s.draw_mask, s.confidence_dtype, s.temperature) == (
        "dream", "entropy", 50, True, "model", 0.0)


def test_summarize_sudoku_and_countdown():
    rows = [{"reward": 1.0, "parts": {"sudoku": 1.0}, "error": None},
            {"reward": 0.5, "parts": {"sudoku": 0.5}, "error": None},
            {"reward": 0.0, "parts": {}, "error": "bad_input: x"}]
    s = summarize(rows, "sudoku")
    assert s["n"] == 3 and s["errors"] == 1
    assert s["cell_accuracy"] == pytest.approx(0.5) and s["solved"] == pytest.approx(1 / 3)
    c = summarize([{"reward": 1.0, "parts": {}, "error": None}, {"reward": 0.1, "parts": {}, "error": None}],
                  "countdown")
    assert c["accuracy"] == 0.5
    assert "| run | 3 |" in markdown_table({"run": s})


def test_held_out_prompts_come_from_the_test_split():
    cfg = load_config(None, ["eval.num_prompts=20"])
    items = eval_prompts(cfg)
    assert len(items) == 20
    assert all(sudoku.in_test_split(it.meta["puzzle"]) for it in items)


def test_paper_test_sets_load():
    cfg = load_config(None, ["task.name=countdown", f"task.test_path={DATA / 'countdown_cd3_test.jsonl'}",
                             "eval.num_prompts=0"])
    items = eval_prompts(cfg)
    assert len(items) == 256 and all(len(it.meta["numbers"]) == 3 for it in items)
    cfg = load_config(None, [f"task.test_path={DATA / '4x4_test_sudoku.csv'}", "eval.num_prompts=10"])
    assert len(eval_prompts(cfg)) == 10


def test_bad_countdown_row_is_named(tmp_path):
    path = tmp_path / "cd.jsonl"
    path.write_text('{"input": "1,2,3", "output": "6"}\n{"input": "1,2"}\n')
    with pytest.raises(ValueError, match=r"cd.jsonl:2"):
        countdown.load_jsonl(str(path), "compact")


def test_gdsd_protocol_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    """`python -m deploy.evaluate --protocol gdsd MODEL_DIR TASK` on the tiny model: the official item draw, greedy
    sampling, whole-completion decode, the official parser and the table row (a few items, short completions)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "sudoku.json"
    proc = subprocess.run([sys.executable, "-m", "deploy.evaluate", "--protocol", "gdsd", tiny_model_dir, "sudoku",
                           "--limit", "3", "--gen-lengths", "16,32", "--prompt-format", "compact", "--batch-size", "2",
                           "--device", "cpu", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| sudoku | " in proc.stdout and "| 16 | 8 | 16 | 3 | cell_accuracy |" in proc.stdout
    results = json.loads(out.read_text())
    shapes = [(r["gen_length"], r["steps"], r["block_length"], r["n"]) for r in results]
    assert shapes == [(16, 8, 16, 3), (32, 16, 32, 3)]
    for r in results:
        assert r["total"] == 3 * 8 and 0 <= r["correct"] <= r["total"]  # 8 empty cells per puzzle, micro-averaged
        assert r["value"] == r["correct"] / r["total"] and len(r["generations"]) == 3


def test_gdsd_protocol_countdown_in_process_and_rejects_tasks_without_one(tiny_model_dir):
    from deploy.evaluate_gdsd import evaluate_protocol, table

    cfg = load_config(None, ["task.name=countdown", "task.prompt_format=compact"])
    results = evaluate_protocol(cfg, tiny_model_dir, "countdown", limit=2, gen_lengths=[8])
    assert results[0]["n"] == 2 and results[0]["total"] == 2 and results[0]["metric"] == "accuracy"
    assert "| countdown |" in table(results)
    with pytest.raises(SystemExit, match="lm-eval"):
        evaluate_protocol(load_config(None, ["task.name=gsm8k"]), tiny_model_dir, "gsm8k", limit=1)


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def family_checkpoints(tmp_path_factory):
    """Tiny checkpoints in the official LLaDA and Dream layouts (config.json model_type llada / Dream), long enough
    for GDSD's Countdown evaluation prompt (~600 characters)."""
    from common.config import TinyModelConfig
    from common.tiny import make_tiny_model

    import torch

    from common.models.weights import build_model, export_checkpoint

    root = tmp_path_factory.mktemp("families")
    dirs = {}
    for family in ("llada", "dream"):
        path = make_tiny_model(TinyModelConfig(family=family, hidden_size=64, num_layers=2, num_heads=4,
                                               num_kv_heads=2 if family == "dream" else None, intermediate_size=128,
                                               max_positions=1024), root / family)
        # matrices redrawn N(0, 1): a fresh tiny model writes one character everywhere, whatever the sampler
        model, config = build_model(path), (path / "config.json").read_text()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=gen))
        export_checkpoint(model.state_dict(), model.args, path, source_dir=None)
        (path / "config.json").write_text(config)
        dirs[family] = str(path)
    return dirs


def run_protocol(model_dir: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:

    proc = subprocess.run([sys.executable, "-m", "deploy.evaluate", "--protocol", "gdsd", model_dir, "countdown",
                           "--limit", "2", "--gen-lengths", "16", "--device", "cpu", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def official_greedy(model_dir: str, items, sampler) -> list[str]:
    """The completions of `items` under `sampler`, one row at a time as eval/run_eval.sh, decoded whole."""
    from actors.sampling import sample
    from common.config import ModelConfig
    from common.denoiser import load_denoiser
    from common.tokenize import encode_prompts

    den = load_denoiser(ModelConfig(), model_dir, device="cpu")
    texts = []
    for it in items:
        ids, lens = encode_prompts(den.tokenizer, [it.prompt], chat_template=bool(den.tokenizer.chat_template),
                                   systems=[it.system], prefills=[it.prefill])
        out = sample(den, ids, sampler, prompt_len=lens)
        texts.append(den.tokenizer.decode(out.completion_ids[0].tolist(), skip_special_tokens=False))
    return texts


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_gdsd_protocol_picks_the_sampler_from_the_checkpoint_family(family_checkpoints, tmp_path, family):
    """Without --config, a Dream checkpoint is evaluated with Dream's diffusion_generate (entropy, top_k 50, bf16
    sample_tokens, MASK in the vocabulary) and a LLaDA one with LLaDA's generate, as eval/eval.py picks by model;
    the command says which. The generations are those of the official settings written out here."""
    import json

    from common.config import SamplerConfig
    from common.tasks import get_task
    from deploy.evaluate_gdsd import official_items

    out = tmp_path / "r.json"
    proc = run_protocol(family_checkpoints[family], out)
    name = {"llada": "LLaDA generate", "dream": "Dream diffusion_generate"}[family]
    assert f"sampler: {name} as the official evaluation runs it for a {family} checkpoint" in proc.stdout
    (result,) = json.loads(out.read_text())
    assert result["family"] == family and result["schedule"] == {"llada": "blocks", "dream": "dream"}[family]
    official = {"llada": SamplerConfig(gen_length=16, steps=8, block_length=16, temperature=0.0,
                                       remasking="low_confidence", draw_mask=True),
                "dream": SamplerConfig(gen_length=16, steps=8, temperature=0.0, schedule="dream", remasking="entropy",
                                       top_k=50, draw_mask=True, confidence_dtype="model")}
    items = official_items(get_task("countdown"), test_path=None, prompt_format="gdsd")[:2]
    texts = [g["generation"] for g in result["generations"]]
    assert texts == official_greedy(family_checkpoints[family], items, official[family])
    other = official["llada" if family == "dream" else "dream"]
    assert texts != official_greedy(family_checkpoints[family], items, other), "the check cannot tell them apart"


def test_gdsd_protocol_uses_gdsd_prompts_whatever_the_config_says(family_checkpoints, tmp_path):
    """--config with task.prompt_format: compact (the make run config) still evaluates GDSD's test prompts and says it
    replaced the key; only --prompt-format changes them, and then the table says they are not the official ones."""
    import json

    from common.tasks import get_task
    from deploy.evaluate_gdsd import official_items

    gdsd = [it.prompt for it in official_items(get_task("countdown"), test_path=None, prompt_format="gdsd")[:2]]
    compact = [it.prompt for it in official_items(get_task("countdown"), test_path=None, prompt_format="compact")[:2]]
    assert gdsd != compact
    out = tmp_path / "r.json"
    proc = run_protocol(family_checkpoints["llada"], out, "--config", "configs/sudoku_tiny.yaml")
    assert "task.prompt_format=compact (from the config) replaced by gdsd" in proc.stderr
    assert "NOT the official" not in proc.stdout
    (result,) = json.loads(out.read_text())
    assert result["prompt_format"] == "gdsd" and [g["prompt"] for g in result["generations"]] == gdsd
    proc = run_protocol(family_checkpoints["llada"], out, "--config", "configs/sudoku_tiny.yaml",
                        "--prompt-format", "compact")
    assert "prompts: 'compact' (--prompt-format), NOT the official GDSD prompts" in proc.stdout
    (result,) = json.loads(out.read_text())
    assert result["prompt_format"] == "compact" and [g["prompt"] for g in result["generations"]] == compact
