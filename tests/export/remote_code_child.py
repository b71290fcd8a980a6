"""Run by test_remote_code.py in a Python where neobert cannot be imported: loads exported folders through
their remote code only and saves what they compute.

usage: python -I remote_code_child.py SPEC.json   (SPEC: folders, inputs .pt, texts, output .pt)
"""

import json
import os
import sys

# The venv installs neobert in editable mode (a .pth entry naming its source folder); drop every path that
# provides the package, so that only the code stored in the folders can run.
sys.path[:] = [p for p in sys.path if not os.path.isfile(os.path.join(p or ".", "neobert", "__init__.py"))]

try:
    import neobert  # noqa: F401
except ImportError:
    NEOBERT_IMPORTABLE = False
else:
    NEOBERT_IMPORTABLE = True

import torch  # noqa: E402
import transformers  # noqa: E402

with open(sys.argv[1]) as handle:
    spec = json.load(handle)
inputs = torch.load(spec["inputs"])
results = {"neobert_importable": NEOBERT_IMPORTABLE, "outputs": {}, "modules": {}, "errors": {}}

torch.set_num_threads(1)
with torch.no_grad():
    for name, (folder, auto_class) in spec["folders"].items():
        model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
        output = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        results["outputs"][name] = output.last_hidden_state if auto_class == "AutoModel" else output.logits
        results["modules"][name] = type(model).__module__

    fill = transformers.pipeline("fill-mask", model=spec["fill_mask_folder"], trust_remote_code=True)
    results["fill_mask"] = [p["token"] for p in fill(spec["fill_mask_text"], top_k=5)]

    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(spec["fill_mask_folder"], trust_remote_code=True, device="cpu")
    results["sentence_vectors"] = encoder.encode(spec["texts"], normalize_embeddings=True, convert_to_tensor=True)

# A function registered with transformers under a new name (with transformers' sdpa mask) runs the folder's
# code: it records each layer's call and hands the work to transformers' own sdpa.
probe_calls = []


def probe(module, query, key, value, attention_mask, **kwargs):
    probe_calls.append(dict(layer=module.layer_idx, causal=module.is_causal, engine_state=kwargs.get("engine_state")))
    return transformers.modeling_utils.ALL_ATTENTION_FUNCTIONS["sdpa"](
        module, query, key, value, attention_mask, **kwargs
    )


transformers.AttentionInterface.register("probe", probe)
transformers.masking_utils.AttentionMaskInterface.register("probe", transformers.masking_utils.sdpa_mask)
probed = transformers.AutoModel.from_pretrained(
    spec["folders"]["encoder"][0], trust_remote_code=True, attn_implementation="probe"
).eval()
with torch.no_grad():
    probe_output = probed(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], engine_state=7)
results["probe"] = dict(
    calls=probe_calls,
    output=probe_output.last_hidden_state,
    implementation=probed.config._attn_implementation,
    supports_attention_backend=type(probed).is_backend_compatible(),
    module=type(probed).__module__,
)

for name, folder in spec["bad_folders"].items():
    try:
        transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)
    except ValueError as error:
        results["errors"][name] = str(error)

results["neobert_loaded"] = any(m == "neobert" or m.startswith("neobert.") for m in sys.modules)
torch.save(results, spec["out"])
