"""The learning-rate schedule under each budget: a wall-clock budget follows the clock, so a run that slows
down mid-way still ends at the floor with its warmup honoured; step and token budgets are as before."""

import math

import pytest

from neobert.train.budget import RunBudget, WallClockBudget, carry_clock_progress, check_time_left
from neobert.train.checkpoint import read_checkpoint
from neobert.train.config import BudgetSection
from neobert.train.metrics import read_jsonl
from neobert.train.optim import LRSchedule
from neobert.train.pretrain import pretrain
from test_train_pretrain import (
    FakeClock,
    SyntheticLoader,
    fake_clock,  # noqa: F401 - a fixture
    tiny_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")

PEAK, FLOOR_FRACTION = 3e-3, 0.1


def cosine_multiplier(position: float) -> float:
    return FLOOR_FRACTION + (1 - FLOOR_FRACTION) * 0.5 * (1 + math.cos(math.pi * position))


def test_step_schedule_is_the_closed_form():
    schedule = LRSchedule(warmup_steps=10, total_steps=110)
    assert [schedule(s) for s in range(3)] == [0.1, 0.2, 0.3]
    end = round(0.9 * 110)  # 99
    for step in (10, 40, 77, 98):
        assert schedule(step) == pytest.approx(cosine_multiplier((step - 10) / (end - 10)), abs=1e-12)
    assert schedule(99) == schedule(109) == pytest.approx(FLOOR_FRACTION, abs=1e-12)
    assert schedule.fraction_reached(55) == 0.5


def test_progress_schedule_decays_from_the_end_of_warmup_to_the_floor():
    schedule = LRSchedule(warmup_steps=4, total_steps=None)
    schedule.advance(0.02, step=2)
    assert schedule(2) == 3 / 4  # warmup goes by steps, whatever the clock says
    schedule.advance(0.1, step=4)  # warmup ends at 10% of the budget
    assert schedule.warmup_end_progress == 0.1 and schedule(4) == pytest.approx(1.0)
    schedule.advance(0.5, step=9)
    assert schedule(9) == pytest.approx(cosine_multiplier((0.5 - 0.1) / (0.9 - 0.1)), abs=1e-12)
    schedule.advance(0.3, step=10)  # the clock never runs backwards
    assert schedule.progress == 0.5
    schedule.advance(0.9, step=11)
    assert schedule(11) == pytest.approx(FLOOR_FRACTION, abs=1e-12)
    schedule.advance(7.0, step=12)
    assert schedule.progress == 1.0 and schedule.fraction_reached(12) == 1.0


def test_wall_clock_progress_follows_time_when_steps_slow_down():
    clock = WallClockBudget(seconds=100.0, window_steps=5)
    for step in range(1, 11):  # one second a step
        clock.observe(step, float(step))
        clock.refine(step)
    assert clock.estimate == 10 + 90  # 90 s left at 1 s a step
    assert clock.progress(10) == pytest.approx(0.10)
    for step in range(11, 21):  # ten times slower
        clock.observe(step, 10.0 + 10.0 * (step - 10))
        clock.refine(step)
    # 110 s spent of 100: the time term says done although 20 steps are far below the first estimate
    assert clock.progress(20) == 1.0
    assert clock.seconds_per_step() == pytest.approx(10.0)
    # between agreed samples the clock extrapolates at the recent speed
    assert clock.elapsed_at(22) == pytest.approx(110.0 + 20.0)


def test_wall_clock_refuses_a_non_positive_budget():
    with pytest.raises(ValueError, match="must be positive"):
        WallClockBudget(seconds=0.0, window_steps=3)


def test_a_step_budget_ends_on_its_count_whatever_the_clock(fake_clock):  # noqa: F811
    schedule = LRSchedule(warmup_steps=2, total_steps=6)
    budget = RunBudget(BudgetSection(steps=6), schedule, elapsed_before=0.0, first_step=0)
    fake_clock.now += 1e6
    assert not budget.by_clock and budget.follow(3, several_processes=False) is None
    assert not budget.hours_spent(3, budget.elapsed(), several_processes=False)
    assert [budget.schedule_complete(step) for step in (5, 6)] == [False, True]
    assert schedule.progress is None and schedule.total_steps == 6  # the clock never touched the schedule


def test_an_hours_budget_calibrates_moves_the_schedule_and_ends_on_the_clock(fake_clock):  # noqa: F811
    schedule = LRSchedule(warmup_steps=1, total_steps=None)
    ten_seconds = BudgetSection(hours=10 / 3600, calibration_steps=2)
    budget = RunBudget(ten_seconds, schedule, elapsed_before=1.0, first_step=0)  # 1 s in an earlier session
    assert budget.by_clock and budget.elapsed() == 1.0
    refined = []
    for step in (1, 2, 3):  # one second a step
        fake_clock.now += 1.0
        refined.append(budget.follow(step, several_processes=False))
    # Two steps' speed measured by step 3: 6 s left at 1 s a step, so 9 steps in all.
    assert refined[:2] == [None, None] and (refined[2].estimate, refined[2].first) == (9, True)
    assert refined[2].describe().startswith("hours budget: 1.000 s a step, so about 9 steps in all")
    assert schedule.total_steps == 9 and schedule.progress == pytest.approx(max(4.0 / 10.0, 3 / 9), abs=1e-12)
    assert not budget.schedule_complete(3)
    assert not budget.hours_spent(3, 9.99, several_processes=False) and budget.hours_spent(3, 10.0, False)
    schedule.advance(1.0, step=4)
    assert budget.schedule_complete(4)


def test_an_hours_budget_too_short_for_the_warmup_is_refused_at_calibration(fake_clock):  # noqa: F811
    schedule = LRSchedule(warmup_steps=20, total_steps=None)
    budget = RunBudget(BudgetSection(hours=10 / 3600, calibration_steps=2), schedule, 0.0, first_step=0)
    fake_clock.now += 1.0
    budget.follow(1, several_processes=False)
    fake_clock.now += 1.0
    budget.follow(2, several_processes=False)
    fake_clock.now += 1.0
    with pytest.raises(ValueError, match=r"budget.hours=0.00277\d* allows about 10 steps here: the decay would end"):
        budget.follow(3, several_processes=False)


def test_a_resumed_wall_clock_schedule_keeps_its_progress_rescaled_to_a_changed_budget():
    saved = LRSchedule(warmup_steps=2, total_steps=40, progress=0.5, warmup_end_progress=0.1)

    def carried(saved_config, budget):
        fresh = LRSchedule(warmup_steps=2, total_steps=None)
        carry_clock_progress(fresh, saved, saved_config, budget)
        return fresh.total_steps, fresh.progress, fresh.warmup_end_progress

    one_hour = {"budget": {"hours": 1.0}}
    assert carried(one_hour, BudgetSection(hours=1.0)) == (40, 0.5, 0.1)
    assert carried(one_hour, BudgetSection(hours=2.0)) == (None, 0.25, 0.05)  # re-estimated, half as far
    assert carried({"budget": {"steps": 40}}, BudgetSection(hours=1.0)) == (None, None, None)  # no clock before
    assert carried(one_hour, BudgetSection(steps=40)) == (None, None, None)  # no clock now


def test_a_branch_needs_time_left_on_an_hours_budget():
    check_time_left(BudgetSection(hours=1.0), 8, elapsed_seconds=1800.0, progress=0.5)
    check_time_left(BudgetSection(steps=10), 8, elapsed_seconds=1e9, progress=1.0)  # a step budget: no clock
    for elapsed, progress in ((3600.0, 0.5), (60.0, 1.0)):
        with pytest.raises(ValueError, match=r"phase.from_checkpoint \(step 8\) .* budget.hours=1: raise the budget"):
            check_time_left(BudgetSection(hours=1.0), 8, elapsed, progress)


class SlowingLoader(SyntheticLoader):
    """Batches that take 0.01 s on the loop's (fake) clock, then `delay` after `after` of them, as when
    another job starts."""

    def __init__(self, *args, clock: FakeClock, after: int, delay: float, **kwargs):
        super().__init__(*args, on_batch=self._take_time, **kwargs)
        self.clock, self.after, self.delay = clock, after, delay

    def _take_time(self, served: int) -> None:
        self.clock.now += 0.01 if served < self.after else self.delay


def learning_rates(out) -> dict[int, float]:
    return {r["step"]: r["train/lr"] for r in read_jsonl(out / "metrics.jsonl") if "train/lr" in r}


def test_a_run_slowed_mid_way_still_ends_at_the_floor(tmp_path, fake_clock):  # noqa: F811
    # 6 s: 20 fast steps calibrate an estimate of hundreds, then each step takes 0.25 s.
    config = tiny_config(tmp_path, "budget.hours=0.0016667", "budget.calibration_steps=5", "train.warmup_steps=5")
    loader = {}

    def make_loader(config, micro_batch, context):
        loader["it"] = SlowingLoader(config, micro_batch, clock=fake_clock, after=20, delay=0.25)
        return loader["it"]

    result = pretrain(config, make_loader)
    assert result.status == "completed" and result.schedule_fraction == 1.0
    # Ended on the budget (within a slow step), not on the stale estimate; every step took its batch's time.
    elapsed = read_checkpoint(result.checkpoint).trainer_state["elapsed_seconds"]
    assert elapsed == pytest.approx(20 * 0.01 + (result.step - 20) * 0.25, abs=1e-9)
    assert 6.0 - 0.25 <= elapsed <= 6.0 + 0.25 and loader["it"].served == result.step
    assert result.final_lr == pytest.approx(PEAK * FLOOR_FRACTION, rel=1e-9)
    rates = learning_rates(tmp_path)
    assert [rates[s] for s in range(1, 6)] == pytest.approx([PEAK * k / 5 for k in range(1, 6)], rel=1e-9)
    after_warmup = [rates[s] for s in sorted(rates) if s > 5]
    assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:], strict=False))  # monotone decay
    # the steps were far fewer than the first estimate: the old rule would have stopped near the peak
    first_estimate = 5 + (6.0 / 0.01)
    assert result.step < first_estimate / 4


def test_resume_keeps_the_clock(tmp_path, fake_clock):  # noqa: F811
    config = tiny_config(tmp_path, "budget.hours=0.0011111", "budget.calibration_steps=3", "train.warmup_steps=2")

    def make_loader(config, micro_batch, context):
        return SlowingLoader(config, micro_batch, clock=fake_clock, after=0, delay=0.1)

    paused = pretrain(config, make_loader, stop_at_step=12)
    saved = read_checkpoint(paused.checkpoint).trainer_state
    progress_before = saved["scheduler"]["lr_lambdas"][0]["progress"]
    assert saved["elapsed_seconds"] == pytest.approx(12 * 0.1, abs=1e-9)
    # progress = max(step / estimated steps, elapsed / budget): 12 of 39 estimated steps, ahead of 1.2 s of 4
    estimate = saved["scheduler"]["lr_lambdas"][0]["total_steps"]
    assert progress_before == pytest.approx(max(12 / estimate, 1.2 / 4.0), abs=1e-9) and estimate == 39
    fake_clock.now += 3600.0  # an hour between the sessions does not count
    resumed = pretrain(config, make_loader, resume=True)
    assert resumed.status == "completed" and resumed.schedule_fraction == 1.0
    assert resumed.final_lr == pytest.approx(PEAK * FLOOR_FRACTION, rel=1e-9)
    rates = learning_rates(tmp_path)
    assert rates[13] <= rates[12]  # no jump back to the peak after the resume
    total = read_checkpoint(resumed.checkpoint).trainer_state["elapsed_seconds"]
    assert total == pytest.approx(0.1 * resumed.step, abs=1e-9)  # the budget counts both sessions' steps
    assert 4.0 - 0.1 <= total <= 4.0 + 0.1


def test_step_and_token_budgets_end_on_their_count(tmp_path):
    by_steps = pretrain(tiny_config(tmp_path / "s", "budget.steps=6"), lambda c, m, x: SyntheticLoader(c, m))
    assert by_steps.step == 6 and by_steps.schedule_fraction == 1.0
    tokens = 6 * 4 * 16  # six steps of 4 sequences of 16 tokens
    by_tokens = pretrain(
        tiny_config(tmp_path / "t", "budget.steps=null", f"budget.tokens={tokens}"),
        lambda c, m, x: SyntheticLoader(c, m),
    )
    assert by_tokens.step == 6
    assert learning_rates(tmp_path / "s") == learning_rates(tmp_path / "t")
    assert by_steps.final_lr == pytest.approx(PEAK * LRSchedule(2, 6)(5), rel=1e-12)


def wsd(**fields) -> LRSchedule:
    return LRSchedule(**{"warmup_steps": 2, "total_steps": 12, "kind": "wsd", "wsd_decay_fraction": 0.5, **fields})


def test_wsd_holds_the_peak_then_decays_to_the_floor_in_its_shape():
    linear = wsd()  # the decay covers the last half: updates 6 to 11 step down, update 11 uses the floor
    assert [linear(s) for s in range(6)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert linear(6) == pytest.approx(FLOOR_FRACTION + (1 - FLOOR_FRACTION) * 5 / 6, abs=1e-12)
    assert linear(8) == pytest.approx(FLOOR_FRACTION + (1 - FLOOR_FRACTION) * 0.5, abs=1e-12)
    assert linear(11) == pytest.approx(FLOOR_FRACTION, abs=1e-12) and linear(30) == linear(11)
    root = wsd(decay_shape="1-sqrt")
    assert [root(s) for s in range(6)] == [linear(s) for s in range(6)]
    for step in (6, 8, 10):
        expected = FLOOR_FRACTION + (1 - FLOOR_FRACTION) * (1 - math.sqrt((step + 1 - 6) / 6))
        assert root(step) == pytest.approx(expected, abs=1e-12)
        assert root(step) < linear(step)  # 1-sqrt drops faster at first
    assert root(11) == pytest.approx(FLOOR_FRACTION, abs=1e-12)


def test_wsd_decay_start_from_a_step_a_branch_or_the_fraction():
    at_nine = wsd(decay_start_step=9)  # updates 9, 10, 11 at 2/3, 1/3 and 0 of the way from the floor
    assert at_nine(8) == 1.0 and at_nine(9) == pytest.approx(0.1 + 0.9 * 2 / 3) and at_nine(11) == pytest.approx(0.1)
    assert wsd(branch_step=8)(9) == pytest.approx(0.1 + 0.9 * 0.5)
    assert wsd(branch_step=8, decay_start_step=10)(9) == 1.0  # the configured step wins
    assert [wsd(wsd_decay_fraction=0.0)(s) for s in (2, 11)] == [1.0, 1.0]  # no decay inside the run
    assert wsd(wsd_decay_fraction=1.0)(6) == pytest.approx(0.1 + 0.9 * 0.5)  # over updates 2 to 11
    with pytest.raises(ValueError, match=r"the branch point \(step 12\) is at or past the end"):
        wsd(branch_step=12)
    with pytest.raises(ValueError, match="decay shape must be one of"):
        wsd(decay_shape="cosine")


def test_wsd_on_a_wall_clock_decays_over_the_last_fraction_of_the_budget():
    schedule = LRSchedule(warmup_steps=2, total_steps=None, kind="wsd", wsd_decay_fraction=0.25)
    schedule.advance(0.05, step=2)
    schedule.advance(0.75, step=40)  # a quarter of the budget is left: the decay starts now
    assert schedule(40) == 1.0
    schedule.advance(0.875, step=50)
    assert schedule(50) == pytest.approx(FLOOR_FRACTION + (1 - FLOOR_FRACTION) * 0.5, abs=1e-12)
    schedule.advance(1.0, step=57)
    assert schedule(57) == pytest.approx(FLOOR_FRACTION, abs=1e-12)
    # A warmup that ends after 1 - fraction of the budget: the decay starts when it ends.
    late = LRSchedule(warmup_steps=2, total_steps=None, kind="wsd", wsd_decay_fraction=0.25)
    late.advance(0.8, step=2)
    late.advance(0.9, step=3)
    assert late(3) == pytest.approx(FLOOR_FRACTION + (1 - FLOOR_FRACTION) * 0.5, abs=1e-12)
    # A decay branch on a wall clock: from the progress at its branch point to the end of the budget.
    branch = LRSchedule(warmup_steps=2, total_steps=None, kind="wsd", branch_step=30)
    branch.advance(0.4, step=30)
    assert branch.decay_start_progress == 0.4 and branch(30) == 1.0
    branch.advance(0.7, step=35)
    assert branch(35) == pytest.approx(FLOOR_FRACTION + (1 - FLOOR_FRACTION) * 0.5, abs=1e-12)
