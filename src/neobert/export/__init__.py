"""Model folders for other software: the transformers / sentence-transformers folder (`folder`), its ONNX
graphs and their int8 variant (`onnx_export`, with `onnx_files` naming where a folder keeps them) and LoRA
settings for PEFT (`lora`). Built on the model; the model never imports this package. Light on purpose:
importing a module of it does not import the others (`encode` reads `onnx_files` alone)."""
