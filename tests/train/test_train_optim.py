"""The learning-rate schedule at chosen steps, against hand-computed values; AdamW parameter groups."""

import math

import pytest
import torch

from neobert.train.config import TrainSection
from neobert.train.optim import LRSchedule, build_optimizer, build_scheduler, parameter_groups, schedule_from


def test_cosine_schedule_values():
    # 10 warmup steps, 100 steps in all: the decay ends at step 90 and the rate then stays at 10%.
    schedule = LRSchedule(warmup_steps=10, total_steps=100, kind="cosine", final_fraction=0.1, decay_fraction=0.9)
    assert schedule(0) == pytest.approx(0.1)  # 1/10 of the peak on the first update
    assert schedule(4) == pytest.approx(0.5)
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)
    # Step 30 is a quarter of the way from 10 to 90: 0.1 + 0.9 * (1 + cos(pi/4)) / 2.
    assert schedule(30) == pytest.approx(0.1 + 0.45 * (1 + math.sqrt(0.5)))
    assert schedule(50) == pytest.approx(0.55)
    assert schedule(90) == pytest.approx(0.1)
    assert schedule(99) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)


def test_paper_schedule_at_scale():
    schedule = schedule_from(TrainSection(), total_steps=1_000_000)
    assert schedule(1999) == pytest.approx(1.0)
    assert schedule(451_000) == pytest.approx(0.55)  # halfway between 2,000 and 900,000
    assert schedule(900_000) == pytest.approx(0.1) and schedule(999_999) == pytest.approx(0.1)


def test_linear_and_constant_schedules():
    linear = LRSchedule(warmup_steps=0, total_steps=100, kind="linear", final_fraction=0.0, decay_fraction=1.0)
    assert [linear(s) for s in (0, 25, 50, 100)] == pytest.approx([1.0, 0.75, 0.5, 0.0])
    constant = LRSchedule(warmup_steps=4, total_steps=100, kind="constant")
    assert [constant(s) for s in (0, 3, 4, 99)] == pytest.approx([0.25, 1.0, 1.0, 1.0])


def test_unknown_total_holds_the_peak_a_known_one_decays():
    schedule = LRSchedule(warmup_steps=2, total_steps=None)
    assert schedule(1) == 1.0 and schedule(50) == 1.0
    assert LRSchedule(warmup_steps=2, total_steps=100)(50) < 1.0
    with pytest.raises(ValueError, match="lower train.warmup_steps"):
        LRSchedule(warmup_steps=95, total_steps=100)


def test_lambda_scheduler_drives_the_optimizer_and_saves_the_total():
    model = torch.nn.Linear(4, 4)
    optimizer = build_optimizer(model, **TrainSection(lr=1e-3, warmup_steps=10).adamw_settings())
    schedule = LRSchedule(warmup_steps=10, total_steps=None)
    scheduler = build_scheduler(optimizer, schedule)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(1e-4) and seen[9] == pytest.approx(1e-3) and seen[11] == pytest.approx(1e-3)
    schedule.advance(0.25, 12)  # a clock-driven run's progress, as the trainer moves it
    state = scheduler.state_dict()
    fresh_schedule = LRSchedule(warmup_steps=10, total_steps=None)
    fresh = build_scheduler(
        build_optimizer(model, **TrainSection(lr=1e-3, warmup_steps=10).adamw_settings()), fresh_schedule
    )
    fresh.load_state_dict(state)
    assert fresh_schedule.progress == 0.25 and fresh.last_epoch == 12
    known = build_scheduler(
        build_optimizer(model, **TrainSection(lr=1e-3).adamw_settings()), LRSchedule(warmup_steps=10, total_steps=100)
    )
    restored = LRSchedule(warmup_steps=10, total_steps=None)
    build_scheduler(build_optimizer(model, **TrainSection(lr=1e-3).adamw_settings()), restored).load_state_dict(
        known.state_dict()
    )
    assert restored.total_steps == 100


def test_adamw_settings_and_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Embedding(10, 4))
    optimizer = build_optimizer(model, **TrainSection(lr=6e-4, weight_decay=0.1).adamw_settings())
    assert isinstance(optimizer, torch.optim.AdamW) and len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.9, 0.95), 1e-8, 0.1)
    decayed, exempt = parameter_groups(model, 0.1, exempt_norms_and_biases=True)
    shapes = sorted(tuple(p.shape) for p in exempt["params"])
    assert shapes == [(4,), (4,), (4,)]  # linear bias, norm weight, norm bias; embedding stays decayed
    assert exempt["weight_decay"] == 0.0 and len(decayed["params"]) == 2
