"""Fine-tuning on labelled data: readers, the training loop, token classification, the GLUE protocol."""
