"""LoRA fine-tuning (seed 002's training step): a JSONL dataset -> a peft adapter directory that `serve --lora` takes.

The training loop is transformers' Trainer on a peft model: it gives checkpoints every epoch and resuming from
the last one. We add the data format, the loss masking (only the answer is learnt), a line a step with the time
left (on 2 shared cores a run takes 6-16 minutes) and the loss curve. Needs slmserve[torch].
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from slmserve.engine.hf_models import model_location, pick_device
from slmserve.models.registry import resolve_model
from slmserve.settings import FinetuneConfig, Settings

log = logging.getLogger(__name__)


def read_examples(path: Path) -> list[list[dict]]:
    """JSONL rows -> chat message lists ending with the assistant's answer. Raises ValueError naming the line.

    A row is {"instruction", "response"} (an optional "input" is appended to the instruction, as in Alpaca)
    or {"messages": [{"role", "content"}, ...]} whose last message is the assistant's.
    """
    examples = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from exc
            if isinstance(row, dict) and "messages" in row:
                messages = row["messages"]
                ok = (
                    isinstance(messages, list)
                    and messages
                    and all(
                        isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages
                    )
                )
                if not ok or messages[-1]["role"] != "assistant":
                    raise ValueError(f"{path}:{n}: messages must be role/content objects ending with the assistant's")
            elif (
                isinstance(row, dict)
                and isinstance(row.get("instruction"), str)
                and isinstance(row.get("response"), str)
            ):
                prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
                messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["response"]}]
            else:
                raise ValueError(f'{path}:{n}: expected {{"instruction", "response"}} or {{"messages": [...]}}')
            examples.append(messages)
    if not examples:
        raise ValueError(f"{path} holds no examples")
    return examples


def encode_example(tokenizer, messages: list[dict], max_length: int) -> dict:
    """Token ids of the whole chat, with labels only on the assistant's last answer (-100 elsewhere)."""
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently inside the full chat")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([-100] * len(prompt_ids) + answer_ids)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def split(examples: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """Shuffle, then hold out val_fraction (at least one example when there are two or more)."""
    order = examples[:]
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction)) if len(order) >= 2 and val_fraction > 0 else 0
    return order[n_val:], order[:n_val]


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def progress_line(step: int, total: int, elapsed: float, first: int = 0, loss: float | None = None) -> str:
    """'step 5/15, loss 3.21, 42 s, ~84 s left': the time left at the mean pace of this run's steps so far
    (steps since `first`, where a resumed run began), evaluations included."""
    done = step - first
    left = f", ~{_duration(elapsed / done * (total - step))} left" if done > 0 and step < total else ""
    shown = f", loss {loss:.2f}" if loss is not None else ""
    return f"step {step}/{total}{shown}, {_duration(elapsed)}{left}"


class Progress(TrainerCallback):
    """A line a logged step, with the time left, in place of Trainer's progress bar and its printed dicts of
    every logged value; and the validation loss after each evaluation."""

    def __init__(self, say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        self._say, self._clock = say, clock
        self._start, self._first = clock(), 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start, self._first = self._clock(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        elapsed = self._clock() - self._start
        if "loss" in logs:
            self._say(progress_line(state.global_step, state.max_steps, elapsed, self._first, logs["loss"]))
        elif "eval_loss" in logs:
            self._say(f"validation loss {logs['eval_loss']:.2f} after epoch {logs.get('epoch', state.epoch):.0f}")


def base_model_path(model: str, cache_dir: str) -> str:
    """What transformers can load for this model: a HF directory or hub id; a GGUF is converted (cached)."""
    return model_location(resolve_model(model), cache_dir)


def merged_gguf(adapter: Path, model: str, out: Path, cache_dir: str) -> None:
    """Write the base model with the LoRA adapter merged into its weights (peft's merge_and_unload) to `out` as an
    F16 GGUF, a standalone model for llama-server, Ollama or slmserve. Raises ValueError for a bad adapter."""
    from peft import PeftModel

    from slmserve.models import convert_hf

    where = base_model_path(model, cache_dir)
    base = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
    try:
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"cannot merge the LoRA adapter at {adapter} into {model}: {exc}") from exc
    with tempfile.TemporaryDirectory() as tmp:
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(where).save_pretrained(tmp)
        try:
            convert_hf.convert(Path(tmp), out)
        except convert_hf.UnsupportedModel as exc:
            raise ValueError(f"the merged model cannot be written as GGUF: {exc}") from exc


def plot_losses(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    val = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="training loss")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finetune(cfg: FinetuneConfig, settings: Settings | None = None) -> dict:
    """Train a LoRA adapter; write it to cfg.output with loss_curve.png and metrics.json. Returns the metrics."""
    settings = settings or Settings()
    examples = read_examples(cfg.data)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    where = base_model_path(cfg.model, settings.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(where)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(f"{cfg.model} has no chat template; fine-tuning here trains chat answers")
    train_rows, val_rows = split(examples, cfg.val_fraction, cfg.seed)
    train_set = [encode_example(tokenizer, m, cfg.max_length) for m in train_rows]
    val_set = [encode_example(tokenizer, m, cfg.max_length) for m in val_rows]
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules if cfg.target_modules == "all-linear" else cfg.target_modules.split(","),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("%d train / %d validation examples; %d of %d parameters trainable", len(train_set), len(val_set),
             trainable, total)  # fmt: skip
    cfg.output.mkdir(parents=True, exist_ok=True)
    args = TrainingArguments(
        output_dir=str(cfg.output),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        logging_steps=1,
        eval_strategy="epoch" if val_set else "no",
        save_strategy="epoch",
        save_total_limit=2,
        report_to="none",
        use_cpu=device.type == "cpu",
        dataloader_pin_memory=False,
        seed=cfg.seed,
        warmup_steps=2,
        disable_tqdm=True,  # Progress says a line a step instead
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set or None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[Progress(lambda line: print(line, flush=True))],
    )
    trainer.remove_callback(PrinterCallback)  # its dicts of every logged value; Progress says what matters
    checkpoint = get_last_checkpoint(str(cfg.output)) if cfg.resume else None
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    model.save_pretrained(str(cfg.output))
    tokenizer.save_pretrained(str(cfg.output))
    history = trainer.state.log_history
    plot_losses(history, cfg.output / "loss_curve.png")
    losses = [e["loss"] for e in history if "loss" in e]
    metrics = {
        "base_model": cfg.model,
        "examples": {"train": len(train_set), "validation": len(val_set)},
        "epochs": cfg.epochs,
        "steps": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "validation_loss": [e["eval_loss"] for e in history if "eval_loss" in e],
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1),
        "resumed_from": checkpoint,
        "lora": {"rank": cfg.rank, "alpha": cfg.alpha, "target_modules": cfg.target_modules},
    }
    (cfg.output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
