"""`slmserve finetune`'s progress lines with the time left (issue #35), on a fake clock and a fake trainer state:
no model, no training."""

from __future__ import annotations

from types import SimpleNamespace

from slmserve.finetune import Progress, progress_line


def test_the_time_left_is_the_mean_pace_so_far_times_the_steps_to_go():
    assert progress_line(5, 15, 42.0) == "step 5/15, 42 s, ~84 s left"
    assert progress_line(5, 15, 42.0, loss=3.2149) == "step 5/15, loss 3.21, 42 s, ~84 s left"
    assert progress_line(15, 15, 368.4) == "step 15/15, 6 min 08 s"  # the last step: nothing left to guess
    # Resumed at step 10: the pace is of this run's 2 steps, not of 12.
    assert progress_line(12, 30, 60.0, first=10) == "step 12/30, 60 s, ~9 min 00 s left"
    assert progress_line(10, 30, 0.0, first=10) == "step 10/30, 0 s"  # no step done yet: no pace


def test_the_callback_says_a_line_a_logged_step_and_the_validation_loss():
    lines, now = [], [100.0]
    progress = Progress(lines.append, clock=lambda: now[0])
    state = SimpleNamespace(global_step=0, max_steps=15, epoch=0.0)
    progress.on_train_begin(None, state, None)
    now[0], state.global_step = 114.0, 1
    progress.on_log(None, state, None, logs={"loss": 4.05, "grad_norm": 1.2, "learning_rate": 5e-4})
    now[0], state.global_step = 170.0, 5
    progress.on_log(None, state, None, logs={"loss": 3.0})
    progress.on_log(None, state, None, logs={"eval_loss": 2.449, "epoch": 1.0})
    progress.on_log(None, state, None, logs={"train_runtime": 70.0})  # Trainer's summary: not a step
    assert lines == [
        "step 1/15, loss 4.05, 14 s, ~3 min 16 s left",
        "step 5/15, loss 3.00, 70 s, ~2 min 20 s left",
        "validation loss 2.45 after epoch 1",
    ]
