"""Cosine of `backend="onnx-int8"` vectors to float32 ones on each kind of x86 CPU, for both graphs
`neobert export --onnx --int8` writes: the portable 7-bit one and the full-range one for VNNI CPUs.

onnxruntime picks its int8 kernels by the CPU it runs on: with VNNI the products accumulate in int32, on
AVX2-only CPUs (and AVX-512 without VNNI) adjacent products are summed in a saturating int16 first. Other
hosts are emulated with `qemu-x86_64 -cpu MODEL` (Debian's qemu-user; rows are skipped without it), which
reports that CPU's features to onnxruntime: the figures are real outputs of those kernels, not timings.

    python benchmarks/studies/int8_hosts.py --preset tiny --texts 64 --out int8_hosts.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EMULATED = {"Haswell (AVX2, no VNNI), emulated": "Haswell"}
# Both graphs `neobert export --onnx --int8` writes; `backend="onnx-int8"` runs the second on VNNI CPUs only.
GRAPHS = {
    "int8 7-bit (portable)": "onnx/model_qint8.onnx",
    "int8 full range (VNNI)": "onnx/model_qint8_avx512_vnni.onnx",
}


def child(folder: Path, texts: list[str]) -> dict:
    """Runs on the CPU being measured: onnxruntime, numpy and tokenizers only (quick under emulation)."""
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    encoded = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)

    def vectors(name: str) -> np.ndarray:
        session = onnxruntime.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        (hidden,) = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    exact = vectors("onnx/model.onnx")
    rows = {}
    for label, name in GRAPHS.items():
        cosine = (vectors(name) * exact).sum(1)
        rows[label] = {"min": float(cosine.min()), "mean": float(cosine.mean())}
    return rows


def build(root: Path, preset: str) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))
    from encode_throughput import neobert_folder
    from neobert.export.onnx_export import export_onnx

    folder = neobert_folder(root, preset)
    export_onnx(folder, int8=True)
    return folder


def measure(folder: Path, texts: list[str], emulator: list[str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(texts, handle)
    command = [*emulator, sys.executable, __file__, "--child", str(folder), handle.name]
    done = subprocess.run(command, capture_output=True, text=True)
    Path(handle.name).unlink()
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="model preset, randomly initialised (default tiny)")
    parser.add_argument("--texts", type=int, default=64, help="reserved tweets and headlines (default 64)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peers"))
    from encode_throughput import short_texts

    texts = short_texts(args.texts)
    report = {"preset": args.preset, "texts": len(texts), "cpus": {}}
    from neobert.export.onnx_files import cpu_has_vnni

    native = "this host" + (", VNNI" if cpu_has_vnni() else ", no VNNI")
    with tempfile.TemporaryDirectory() as scratch:
        folder = build(Path(scratch), args.preset)
        report["cpus"][native] = measure(folder, texts, [])
        qemu = shutil.which("qemu-x86_64")
        for label, model in EMULATED.items():
            report["cpus"][label] = measure(folder, texts, [qemu, "-cpu", model]) if qemu else {"skipped": "no qemu"}
    for cpu, rows in report["cpus"].items():
        cells = [f"{k}: min {v['min']:.5f} mean {v['mean']:.5f}" for k, v in rows.items() if isinstance(v, dict)]
        print(f"{cpu:40s} " + (" | ".join(cells) or json.dumps(rows)))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text()))))
    else:
        main()
