"""Fine-tuning on labelled data: readers, the training loop, task metrics, token classification, the GLUE
protocol."""
