"""Model FLOPs against hand-computed neobert-250m numbers; device-side accumulation; sinks; the loss plot."""

import json

import pytest
import torch

from neobert import NeoBERTConfig
from neobert.model.flops import forward_flops, model_shapes, non_embedding_parameters, training_flops
from neobert.train.metrics import (
    ConsoleProgress,
    JsonlSink,
    MetricAccumulator,
    MetricsLogger,
    batch_shape_stats,
    mfu,
    peak_flops,
    plot_loss_curve,
    read_jsonl,
)

NEOBERT_250M = NeoBERTConfig.from_preset("neobert-250m")
# Spec A.11: 28 layers x 7,079,424 parameters, plus the final norm's 768.
BLOCK_PARAMETERS = 28 * 7_079_424 + 768


def test_non_embedding_parameters_of_neobert_250m():
    assert non_embedding_parameters(NEOBERT_250M) == BLOCK_PARAMETERS == 198_224_640


def test_training_flops_per_token_of_neobert_250m_at_1024():
    # Forward per token: 2 x 198,224,640 + 4 x 28 layers x 1,024 x 768 (attention, L^2 per sequence / L).
    forward = 2 * 198_224_640 + 4 * 28 * 1024 * 768
    assert forward == 484_529_664
    assert training_flops(NEOBERT_250M, 1024, 1024**2) / 1024 == 3 * forward == 1_453_588_992
    # The sparse decoder adds 2 x 768 x 30,522 per masked token: 20% of the tokens.
    with_decoder = training_flops(NEOBERT_250M, 1024, 1024**2, masked_tokens=0.2 * 1024) / 1024
    assert with_decoder == pytest.approx(3 * (forward + 0.2 * 2 * 768 * 30522))


def test_model_shapes_cover_each_layer_and_the_decoder():
    config = NeoBERTConfig.from_preset("tiny", num_hidden_layers=3)
    shapes = model_shapes(config, tokens=256, masked=51)
    assert len(shapes) == 3 * 4 + 1
    assert shapes[-1] == (51, 128, config.vocab_size)
    assert (256, 128, 2 * config.ffn_hidden_size) in shapes and (256, config.ffn_hidden_size, 128) in shapes


def test_attention_term_counts_each_document_of_a_packed_row():
    tiny = NeoBERTConfig.from_preset("tiny")
    one_sequence = forward_flops(tiny, 512, 512**2, parameters=0)
    two_documents = forward_flops(tiny, 512, 2 * 256**2, parameters=0)
    assert one_sequence == 4 * 4 * 128 * 512**2 and two_documents == one_sequence / 2


def test_mfu_and_peaks():
    # A step of 2M tokens at 1,453,588,992 FLOPs each, in 10 s, on a 989 TFLOP/s part.
    flops = 2_097_152 * 1_453_588_992
    assert mfu(flops, 10.0, 989e12) == pytest.approx(flops / 10 / 989e12)
    assert mfu(flops, 10.0, None) is None
    assert peak_flops(torch.device("cpu")) is None and peak_flops(torch.device("cpu"), 1.5e11) == 1.5e11


def test_batch_shape_stats_for_padded_and_packed_batches():
    padded = {
        "input_ids": torch.ones(2, 8, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 8, [1] * 4 + [0] * 4]),
        "labels": torch.tensor([[5] + [-100] * 7, [6, 7] + [-100] * 6]),
    }
    assert batch_shape_stats(padded) == {"tokens": 12.0, "slots": 16.0, "sum_sq": 80.0, "masked": 3.0}
    packed = {
        "input_ids": torch.ones(1, 10, dtype=torch.long),
        "cu_seqlens": torch.tensor([0, 3, 10]),
        "labels": torch.full((1, 10), -100),
    }
    assert batch_shape_stats(packed) == {"tokens": 10.0, "slots": 10.0, "sum_sq": 58.0, "masked": 0.0}


def test_accumulator_sums_on_the_device_until_read():
    accumulator = MetricAccumulator(torch.device("cpu"))
    for value in (1.0, 2.0, 3.5):
        accumulator.add("loss", torch.tensor(value))
    accumulator.add("tokens", 10)
    assert accumulator.read() == {"loss": 6.5, "tokens": 10.0}
    assert accumulator.read() == {}  # reading starts a fresh window


def test_jsonl_sink_appends_and_flushes(tmp_path):
    path = tmp_path / "logs" / "metrics.jsonl"
    sink = JsonlSink(path)
    sink.write({"step": 1, "train/loss": 9.5})
    assert json.loads(path.read_text()) == {"step": 1, "train/loss": 9.5}  # readable before close
    sink.close()
    again = JsonlSink(path)
    again.write({"step": 2, "train/loss": float("nan")})
    again.close()
    with open(path, "a") as handle:
        handle.write('{"step": 3, "train/lo')  # a line cut short by a kill
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def test_logger_writes_jsonl_and_tensorboard_only_on_the_main_rank(tmp_path):
    logger = MetricsLogger(tmp_path / "main", ["jsonl", "tensorboard"])
    logger.log({"step": 5, "train/loss": 3.0, "train/lr": 1e-3})
    logger.close()
    assert read_jsonl(tmp_path / "main" / "metrics.jsonl") == [{"step": 5, "train/loss": 3.0, "train/lr": 1e-3}]
    assert any((tmp_path / "main" / "tensorboard").iterdir())
    silent = MetricsLogger(tmp_path / "other", ["jsonl"], enabled=False)
    silent.log({"step": 5})
    assert not (tmp_path / "other").exists()


def test_progress_bar_can_be_silenced(capsys):
    progress = ConsoleProgress(total=3, enabled=False)
    progress.update(1, {"loss": 1.0})
    progress.message("done")
    progress.close()
    assert capsys.readouterr().out == "done\n"


def test_loss_curve_png_is_written(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    sink = JsonlSink(jsonl)
    for step in range(1, 21):
        sink.write({"step": step, "train/loss": 10.0 / step})
    sink.write({"step": 20, "eval/loss": 0.9, "eval/accuracy": 0.3})
    sink.close()
    png = plot_loss_curve(jsonl, tmp_path / "report" / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="no train/loss or eval/loss"):
        plot_loss_curve(empty, tmp_path / "x.png")


def test_other_ranks_print_nothing(capsys):
    progress = ConsoleProgress(total=3, enabled=True, quiet=True)
    progress.update(1)
    progress.message("rank 1 speaking")
    progress.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
