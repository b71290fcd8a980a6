"""Pre-training configuration: presets load, overrides are typed, bad keys and values fail clearly."""

import re

import pytest
import yaml

from neobert.train.config import PRESET_ROOT, PretrainConfig, batch_split, load_config

CONFIGS = PRESET_ROOT
PRESETS = sorted(CONFIGS.rglob("*.yaml"))


def test_every_preset_is_found():
    names = {path.relative_to(CONFIGS).as_posix() for path in PRESETS}
    expected = {"demo.yaml", "demo-short.yaml", "neobert-250m-stage1.yaml", "neobert-250m-stage2.yaml"}
    expected |= {f"ablations/m{i}.yaml" for i in range(10)}
    assert expected <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_preset_loads_and_round_trips_through_its_resolved_yaml(path, tmp_path):
    config = load_config(path)
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(config.to_yaml())
    assert load_config(dumped) == config
    assert config.model.neobert_config().max_length >= config.data.max_length


def test_stage_presets_hold_the_paper_recipe():
    stage1 = load_config(CONFIGS / "neobert-250m-stage1.yaml")
    assert (stage1.train.lr, stage1.train.weight_decay, stage1.train.warmup_steps) == (6e-4, 0.1, 2000)
    assert stage1.train.betas == (0.9, 0.95) and stage1.train.eps == 1e-8 and stage1.train.clip_grad_norm == 1.0
    assert stage1.budget.steps == 1_000_000 and stage1.tokens_per_step == 2048 * 1024
    stage2 = load_config(CONFIGS / "neobert-250m-stage2.yaml")
    assert stage2.data.max_length == 4096 and stage2.budget.steps == 50_000 and stage2.tokens_per_step == 512 * 4096
    assert stage2.train.schedule == "constant" and stage2.train.lr == pytest.approx(0.1 * stage1.train.lr)
    assert [(b.min_document_tokens, b.probability) for b in stage2.data.length_mixture] == [
        (0, 0.2),
        (1024, 0.4),
        (2048, 0.4),
    ]
    # Stage 2 is a phase that carries stage 1's weights only (step 0, its own optimiser, data and schedule).
    assert stage2.model.init_from is None
    assert stage2.phase.from_checkpoint == "runs/neobert-250m-stage1/checkpoints"
    assert (stage2.phase.carry, stage2.phase.name) == ("weights", "stage2")
    assert stage1.phase.from_checkpoint is None
    # Inherited from stage 1 and not restated.
    assert stage2.train.betas == (0.9, 0.95) and stage2.model.preset == "neobert-250m"


def test_ablations_are_cumulative():
    m0, m1, m2, m4, m5, m8 = (load_config(CONFIGS / "ablations" / f"m{i}.yaml") for i in (0, 1, 2, 4, 5, 8))
    assert m0.model.preset == "bert-like-m0" and m0.data.mask_mode == "bert" and m0.data.mlm_probability == 0.15
    assert m0.tokens_per_step == 131072 and m0.train.schedule == "linear"
    assert m1.model.preset == "neobert-120m" and m1.data.path == m0.data.path
    assert m2.data.path != m1.data.path
    assert m4.train.schedule == "cosine" and m4.data.mask_mode == "bert"
    assert (m5.data.mask_mode, m5.data.mlm_probability) == ("all", 0.2)
    assert m8.model.preset == "neobert-250m" and m8.data.mask_mode == "all" and m8.data.max_length == 512


def test_dotted_overrides_are_typed_from_the_annotations():
    config = load_config(
        CONFIGS / "demo.yaml",
        [
            "train.lr=6e-4",
            "train.betas=[0.8, 0.9]",
            "train.compile=true",
            "data.batch_size=1e2",
            "model.overrides.hidden_size=256",
            "system.log_sinks=[jsonl, tensorboard]",
            "train.keep_every=null",
        ],
    )
    assert config.train.lr == 6e-4 and isinstance(config.train.lr, float)
    assert config.train.betas == (0.8, 0.9) and config.train.compile is True
    assert config.data.batch_size == 100 and isinstance(config.data.batch_size, int)
    assert config.model.neobert_config().hidden_size == 256
    assert config.system.log_sinks == ["jsonl", "tensorboard"] and config.train.keep_every is None


def test_a_budget_on_the_command_line_replaces_the_files():
    config = load_config(CONFIGS / "neobert-250m-stage1.yaml", ["budget.hours=2"])
    assert (config.budget.kind, config.budget.hours, config.budget.steps) == ("hours", 2.0, None)
    tokens = load_config(CONFIGS / "demo.yaml", ["budget.tokens=4096000"])
    assert tokens.budget.total_steps(tokens.tokens_per_step) == 4096000 // (32 * 128)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.learning_rate=1e-3", "unknown config key train.learning_rate"),
        ("trian.lr=1e-3", "unknown config key trian"),
        ("train.lr=fast", "train.lr must be a number"),
        ("data.batch_size=2.5", "data.batch_size must be an integer"),
        ("train.compile=maybe", "train.compile must be true or false"),
        ("data.sequence=chunk", "data.sequence must be one of"),
        ("train.betas=[0.9]", "train.betas must have 2 items"),
        ("model.overrides.hidden=3", "unknown config key model.overrides.hidden"),
        ("model.overrides.num_hidden_layers=two", "model.overrides.num_hidden_layers must be an integer"),
        ("model.preset=huge", "model.preset 'huge' is not a preset"),
        ("system.log_sinks=[jsonl, csv]", "unknown sink 'csv'"),
        ("train.lr", "must look like section.key=value"),
        ("data.length_mixture=[[0.5, 0], [0.6, 64]]", "sum to 1"),
        ("train.schedule=trapezoid", "train.schedule must be one of"),
        ("train.wsd_decay_fraction=1.5", "train.wsd_decay_fraction must lie in [0, 1]"),
        ("train.wsd_decay_fraction=-0.1", "train.wsd_decay_fraction must lie in [0, 1]"),
        ("train.decay_shape=cosine", "train.decay_shape must be one of ['linear', '1-sqrt']"),
        ("train.final_lr=4e-3", "the floor cannot be above the peak"),
        ("train.final_lr_fraction=1.5", "a floor above the peak"),
        (("train.schedule=cosine", "train.decay_start_step=500"), "train.decay_start_step needs train.schedule=wsd"),
        ("phase.carry=optimizer", "phase.carry must be one of ['state', 'weights']"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_config(CONFIGS / "demo.yaml", [override] if isinstance(override, str) else list(override))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.decay_start_step=1000"], "train.decay_start_step (step 1000) is at or past the end of the run (1000"),
        (["train.decay_start_step=50"], "train.decay_start_step (50) falls inside the 100 warmup steps"),
        (["train.wsd_decay_fraction=0.5", "budget.steps=100"], "ends within its 100 warmup steps"),
        (["model.init_from=runs/a", "phase.from_checkpoint=runs/b"], "model.init_from and phase.from_checkpoint both"),
    ],
)
def test_bad_wsd_and_phase_configurations_are_named_before_training(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(CONFIGS / "demo.yaml", ["budget.steps=1000", "train.schedule=wsd", *overrides])


def test_wsd_keys_resolve_and_round_trip(tmp_path):
    config = load_config(
        CONFIGS / "demo.yaml",
        ["train.schedule=wsd", "train.decay_shape=1-sqrt", "train.wsd_decay_fraction=0.25", "train.final_lr=3e-4"],
    )
    assert (config.train.schedule, config.train.decay_shape, config.train.wsd_decay_fraction) == ("wsd", "1-sqrt", 0.25)
    assert config.train.floor_fraction == pytest.approx(0.1)
    dumped = tmp_path / "resolved.yaml"
    dumped.write_text(config.to_yaml())
    assert load_config(dumped) == config


def test_budget_needs_exactly_one_driver(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({"budget": {"steps": 10, "hours": 1.0}}))
    with pytest.raises(ValueError, match="exactly one of budget.steps, budget.tokens or budget.hours"):
        load_config(path)
    path.write_text(yaml.safe_dump({"budget": {"steps": 0}}))
    with pytest.raises(ValueError, match="budget.steps must be positive"):
        load_config(path)


def test_cross_section_checks(tmp_path):
    with pytest.raises(ValueError, match="exceeds the model's max_length"):
        load_config(CONFIGS / "demo.yaml", ["data.max_length=2048"])
    with pytest.raises(ValueError, match="warmup_steps"):
        load_config(CONFIGS / "demo.yaml", ["budget.steps=50"])
    loop = tmp_path / "a.yaml"
    loop.write_text("inherit: a.yaml\n")
    with pytest.raises(ValueError, match="inheritance loops"):
        load_config(loop)


def test_batch_split_keeps_the_global_batch_whatever_the_world_size():
    config = load_config(CONFIGS / "neobert-250m-stage1.yaml")
    assert batch_split(config.data, config.train, world_size=8) == (32, 8)
    assert batch_split(config.data, config.train, world_size=1) == (32, 64)
    config = PretrainConfig()
    assert batch_split(config.data, config.train, world_size=2) == (16, 1)
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        batch_split(config.data, config.train, world_size=3)
