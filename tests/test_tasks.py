"""FBC2 tasks: token tables, training rows and prompts equal to the baseline's (fixture), every task end to end."""

import importlib.util
import json
import random
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, reference_python
from numerics import assert_tokens_match, decoding_margins
from parity_weights import fill_state_dict
from typer.testing import CliRunner

from rudolph_ft.cli import app
from rudolph_ft.components import Components
from rudolph_ft.config import RuDolphConfig
from rudolph_ft.model import RuDolph
from rudolph_ft.model.vqgan import load_vqgan
from rudolph_ft.pipelines import (
    answer,
    answer_batch,
    answer_text,
    answer_text_batch,
    continue_text,
    continue_text_batch,
    read_text,
)
from rudolph_ft.pipelines.prompts import SPECIAL_TOKEN_OFFSETS, Prompter
from rudolph_ft.pipelines.sampling import SamplingSettings
from rudolph_ft.pipelines.tasks import ANSWER_SAMPLING, sample_text_ids
from rudolph_ft.tasks import TASKS, TaskLayout, format_options, get_task, task_token_ids
from rudolph_ft.tokenizer import Tokenizer

_spec = importlib.util.spec_from_file_location("pipeline_bundle", ASSETS / "pipelines" / "bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)
one_thread = bundle.one_thread  # autouse: tiny models, one thread

FIXTURE = json.loads((ASSETS / "tasks" / "fbc2_layout.json").read_text(encoding="utf-8"))
TOKENIZER = Tokenizer.from_file(ASSETS / "tokenizer" / "yttm-captions" / "bpe.model")
PHOTOS = [str(p) for p in sorted((ASSETS / "images").glob("*.jpg"))[:2]]
FBC2_IDS = {  # issue 16, from the baseline's DEFAULT_SPC_TOKENS
    "<LT_UNK>": 16384, "<RT_UNK>": 16385, "<LT_T2I>": 16386, "<LT_I2T>": 16387, "<LT_T2T>": 16388,
    "<RT_I2T>": 16389, "<LT_TQA>": 16390, "<RT_TQA>": 16391, "<LT_MQA>": 16392, "<RT_MQA>": 16393,
    "<LT_VQA>": 16394, "<RT_VQA>": 16395, "<LT_CAP>": 16396, "<RT_CAP>": 16397, "<LT_GEN>": 16398,
    "<LT_REC>": 16399, "<RT_REC>": 16400,
}


def fbc2_tiny_config() -> RuDolphConfig:
    """`2.7B_fbc2` (its name, so its task tokens) at a tiny size: the fixture's text lengths and vocabulary, the tiny
    VQGAN's 8x8 codes."""
    return RuDolphConfig.from_preset("2.7B_fbc2").replace(
        num_layers=2, hidden_size=32, num_attention_heads=4, l_text_seq_length=FIXTURE["l_text_seq_length"],
        r_text_seq_length=FIXTURE["r_text_seq_length"], image_tokens_per_dim=8, kernel_size=3, last_kernel_size=5,
        text_special_tokens=32, image_special_tokens=8, image_vocab_size=512,
        vocab_size=FIXTURE["bpe_vocab_size"] + FIXTURE["l_text_seq_length"])


@pytest.fixture(scope="module")
def fbc2() -> Components:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = RuDolph(fbc2_tiny_config()).eval()
    return Components(model, TOKENIZER, load_vqgan("tiny"))


def layout() -> TaskLayout:
    return TaskLayout(fbc2_tiny_config(), TOKENIZER)


# Token tables -----------------------------------------------------------------------------------------------------
def test_each_preset_has_its_task_tokens():
    assert task_token_ids(RuDolphConfig.from_preset("2.7B_fbc2")) == FBC2_IDS
    base = {name: FBC2_IDS[name] for name in SPECIAL_TOKEN_OFFSETS}
    for name in ("350M", "1.3B", "2.7B"):
        assert task_token_ids(RuDolphConfig.from_preset(name)) == base
    assert {name: 16384 + offset for name, offset in SPECIAL_TOKEN_OFFSETS.items()} == base  # prompts.py agrees
    for name in ("350M_v1", "demo", "tiny"):
        assert task_token_ids(RuDolphConfig.from_preset(name)) == {}
    relative = {name: token_id - 16384 + FIXTURE["bpe_vocab_size"] for name, token_id in FBC2_IDS.items()}
    assert task_token_ids(fbc2_tiny_config()) == relative == FIXTURE["spc_tokens"]


def test_tasks_carry_the_baselines_tokens_and_weights():
    assert set(TASKS) == {"textqa", "mathqa", "captioning", "generation", "vqa", "text_recognition"}
    weights = {name: (t.loss_weights.left, t.loss_weights.image, t.loss_weights.right) for name, t in TASKS.items()}
    assert weights == {"textqa": (1, 0.01, 7), "mathqa": (1, 0.01, 7), "generation": (1, 7, 0.01),
                       "captioning": (1, 1, 7), "vqa": (1, 1, 7), "text_recognition": (1, 1, 7)}
    assert (TASKS["vqa"].left_token, TASKS["vqa"].right_token) == ("<LT_VQA>", "<RT_VQA>")
    assert TASKS["generation"].right_token is None and not TASKS["textqa"].has_image and TASKS["vqa"].has_image
    with pytest.raises(KeyError, match="choose one of: textqa"):
        get_task("ocr")
    assert format_options(["70", "250"]) == "a) 70; b) 250"


# Parity with the baseline's rows (tests/assets/tasks, scripts/make_task_fixtures.py) --------------------------------
def test_training_rows_equal_the_baselines_with_the_same_seed():
    samples = FIXTURE["training"]["samples"]
    rng = random.Random(FIXTURE["training"]["seed"])
    for sample in samples:
        left, right = get_task(sample["task"]).training_rows(layout(), sample["left_text"], sample["right_text"],
                                                             rng=rng)
        assert left.tolist() == sample["left_ids"], sample["left_text"]
        assert right.tolist() == sample["right_ids"], sample["right_text"]
    # the seed exercised both draws on both sides
    unk = {FIXTURE["spc_tokens"]["<LT_UNK>"], FIXTURE["spc_tokens"]["<RT_UNK>"]}
    seconds = [s[key][1] for s in samples for key in ("left_ids", "right_ids") if s[key][0]]
    assert any(t in unk for t in seconds) and any(t not in unk for t in seconds)


@pytest.mark.reference
def test_the_fixture_is_what_the_baselines_logic_makes_now(tmp_path):
    """Re-run the fixture script in the reference env (youtokentome, rudalle): the committed rows are its output."""
    python = reference_python()
    script = Path(__file__).parents[1] / "scripts" / "make_task_fixtures.py"
    subprocess.run([python, str(script), "--out", str(tmp_path)], check=True, capture_output=True, timeout=120)
    assert json.loads((tmp_path / "fbc2_layout.json").read_text(encoding="utf-8")) == FIXTURE


def test_prompts_equal_the_baselines():
    for case in FIXTURE["inference"]:
        options = format_options(case["options"]) if case["options"] else None
        left, start = get_task(case["task"]).prompt(layout(), *case["parts"], options)
        assert left.tolist() == case["left_ids"], case
        assert start.tolist() == case["answer_start"]
    for case in FIXTURE["continuation"]:
        assert layout().continuation_prompt(case["text"]).tolist() == case["prompt_ids"], case["text"]


def test_greedy_answers_equal_the_baselines_decoding_loop():
    """The same weights and codes: our cached decoding of the VQA / text-recognition prompts writes the tokens the
    baseline's `generate_tokens` writes (up to each answer's eos; near-ties excepted, `assert_tokens_match`)."""
    greedy = FIXTURE["greedy"]
    config = fbc2_tiny_config().replace(r_text_sees_l_text=True)  # the baseline's plain causal mask
    assert {key: getattr(config, key) for key in greedy["params"] if hasattr(config, key)} == greedy["params"]
    model = RuDolph(config).eval()
    model.load_state_dict(fill_state_dict(model.state_dict(), greedy["weights_seed"]), strict=True)
    cases = [case for case in FIXTURE["inference"] if case["task"] in ("vqa", "text_recognition")]
    starts = []
    for case, left_ids in zip(cases, greedy["left_ids"], strict=True):
        options = format_options(case["options"]) if case["options"] else None
        left, start = get_task(case["task"]).prompt(layout(), *case["parts"], options)
        assert left.tolist() == left_ids
        starts.append(start)
    prompts = torch.cat([torch.tensor(greedy["left_ids"]), torch.tensor(greedy["codes"]), torch.stack(starts)], 1)
    prompter, settings = Prompter(config, TOKENIZER, "rc10"), SamplingSettings(top_k=1)
    ours = sample_text_ids(model, prompts, config.r_text_seq_length - 2, settings, prompter=prompter, batch_size=3)
    expected = torch.tensor(greedy["answer_ids"])
    ended = (expected == TOKENIZER.eos_id).cumsum(1).cumsum(1) > 1  # after each answer's eos: pads in ours
    margins = decoding_margins(model, prompts, ours, None, settings, head="text", columns=TOKENIZER.vocab_size)
    assert_tokens_match(ours, expected.masked_fill(ended, 0), margins, sequential=True, what="greedy answers")
    assert [prompter.decode(row) for row in ours] == [prompter.decode(row) for row in expected]


def test_task_tokens_option_and_models_without_them():
    tokens = FIXTURE["spc_tokens"]
    left, start = TASKS["vqa"].prompt(layout(), "какое это блюдо?", task_tokens=True)
    assert (left[1].item(), start.tolist()) == (tokens["<LT_VQA>"], [2, tokens["<RT_VQA>"]])
    plain = TaskLayout(fbc2_tiny_config().replace(name="demo"), TOKENIZER)  # no task tokens: instruction as text
    left, start = TASKS["vqa"].prompt(plain, "какое это блюдо?")
    text = TOKENIZER.encode("ответь на вопрос по картинке. какое это блюдо?")
    row = [2, *text, 3][:24]  # cut: the eos goes first
    assert left.tolist() == row + [0] * (24 - len(row)) and start.tolist() == [2]


# Pipelines end to end --------------------------------------------------------------------------------------------
def test_every_task_runs_end_to_end_seeded_and_batch_independent(fbc2):
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    seen = []
    hook = fbc2.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        vqa = answer(fbc2, image, "какое это блюдо?", ["борщ", "плов"])
    finally:
        hook.remove()
    left, start = TASKS["vqa"].prompt(layout(), "какое это блюдо?", "a) борщ; b) плов")
    assert torch.equal(seen[0][0], torch.cat([left, seen[0][0, 24:24 + 64], start]))  # the prompt fed first
    assert vqa == answer(fbc2, image, "какое это блюдо?", ["борщ", "плов"])  # seeded
    assert answer_batch(fbc2, [image, PHOTOS[0]], ["какое это блюдо?", "а это?"], [["борщ", "плов"], None],
                        batch_size=1)[0] == vqa  # another input and another batch size do not change it
    texts = [answer_text(fbc2, "сколько белков?", context="борщ: белков 3,5 г."), answer_text(fbc2, "2 плюс 2?"),
             read_text(fbc2, PHOTOS[1]), continue_text(fbc2, "борщ")]
    assert all(isinstance(text, str) for text in [vqa, *texts]) and texts[3].startswith("борщ")
    assert answer_text_batch(fbc2, ["2 плюс 2?", "сколько белков?"], [None, "борщ: белков 3,5 г."],
                             task="textqa")[1] == texts[0]
    assert continue_text_batch(fbc2, ["плов", "борщ"])[1] == texts[3]
    assert answer_batch(fbc2, [], []) == answer_text_batch(fbc2, []) == continue_text_batch(fbc2, []) == []


def test_a_scripted_fbc2_model_answers_after_the_task_token():
    """A model scripted to write a text from the right text's start: the answer is what follows `[bos, <RT_UNK>]`."""
    components = Components(RuDolph(fbc2_tiny_config()).eval(), TOKENIZER, load_vqgan("tiny"))
    bundle.script_caption(components, "блюдо: борщ; ккал: 70;")
    ids = TOKENIZER.encode_text("блюдо: борщ; ккал: 70;", FIXTURE["r_text_seq_length"])
    expected = TOKENIZER.decode_text(ids[2:]).strip()  # position 1 (<RT_UNK>) predicts the third token on
    assert expected and answer(components, PHOTOS[0], "какое это блюдо?", top_k=1) == expected
    assert read_text(components, PHOTOS[1], top_k=1) == expected


def test_the_kv_cache_samples_what_rerunning_samples(fbc2):
    left, start = TASKS["textqa"].prompt(layout(), "текст", "вопрос?")
    codes = torch.randint(0, 512, (3, 64), generator=torch.Generator().manual_seed(1))
    prompts = torch.cat([left.expand(3, -1), codes, start.expand(3, -1)], dim=1)
    prompter = Prompter(fbc2.model.config, TOKENIZER, "rc10")
    kwargs = dict(prompter=prompter, seed=5, batch_size=2)
    cached = sample_text_ids(fbc2.model, prompts, 10, ANSWER_SAMPLING, **kwargs)
    assert torch.equal(cached, sample_text_ids(fbc2.model, prompts, 10, ANSWER_SAMPLING, use_cache=False, **kwargs))
    assert int(cached.max()) < FIXTURE["bpe_vocab_size"]  # only BPE ids are sampled


def test_a_model_without_task_tokens_answers_with_a_warning_once():
    components = bundle.tiny_components(seed=1, scripted=bundle.SCRIPT)
    with pytest.warns(UserWarning, match="no FBC2 task tokens"):
        first = answer(components, PHOTOS[0], "какое это блюдо?")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert answer(components, PHOTOS[1], "сколько здесь ккал?") == first == bundle.SCRIPT


def test_ask_command(tmp_path):
    bundle.save_tiny_bundle(tmp_path / "model", seed=1, scripted=bundle.SCRIPT)
    result = CliRunner().invoke(app, ["ask", PHOTOS[0], "какое это блюдо?", "--model", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == bundle.SCRIPT
    assert "no FBC2 task tokens" in result.stderr
    result = CliRunner().invoke(app, ["ask", PHOTOS[0], "что это?", "--options", "борщ; плов", "--json",
                                      "--model", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"image": PHOTOS[0], "question": "что это?", "options": ["борщ", "плов"],
                                         "answer": bundle.SCRIPT}
    result = CliRunner().invoke(app, ["ask", str(tmp_path / "missing.jpg"), "что это?", "--model", "no-such-model"])
    assert result.exit_code == 1 and "missing.jpg" in result.stderr  # the photo is checked before any model loads


def test_text_reading_and_continuation_commands_print_what_the_python_calls_return(tmp_path):
    """`ask-text` (text QA with --context, math QA without), `read` and `continue`: the CLI prints what the Python
    call on the same model folder returns, --json adds the inputs, a missing photo fails before any model loads."""
    from rudolph_ft.components import load_components
    from rudolph_ft.pipelines import answer_text, continue_text, read_text

    folder = str(tmp_path / "model")
    bundle.save_tiny_bundle(folder, seed=1, scripted=bundle.SCRIPT)
    components = load_components(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no FBC2 task tokens", checked by the commands below
        expected = {
            ("ask-text", "сколько белков в борще?", "--context", "в борще 3,5 г белков."):
                answer_text(components, "сколько белков в борще?", "в борще 3,5 г белков.", seed=7),
            ("ask-text", "2 плюс 2?", "--options", "4; 5"): answer_text(components, "2 плюс 2?", None, ["4", "5"],
                                                                        seed=7),
            ("read", PHOTOS[0]): read_text(components, PHOTOS[0], seed=7),
            ("continue", "борщ варят из"): continue_text(components, "борщ варят из", seed=7, top_k=1),
        }
    for args, text in expected.items():
        extra = ["--top-k", "1"] if args[0] == "continue" else []
        result = CliRunner().invoke(app, [*args, "--model", folder, "--seed", "7", *extra])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == text.strip(), args
        assert ("no FBC2 task tokens" in result.stderr) == (args[0] != "continue"), args  # T2T is an rc10 task
    result = CliRunner().invoke(app, ["ask-text", "2 плюс 2?", "--context", "текст", "--json", "--model", folder])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"question", "context", "options", "answer"}
    result = CliRunner().invoke(app, ["read", str(tmp_path / "missing.jpg"), "--model", "no-such-model"])
    assert result.exit_code == 1 and "missing.jpg" in result.stderr

