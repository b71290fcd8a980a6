"""Pre-training data: sources -> token shards (`prepare`) -> sequences, packing, masking -> batches
(`loader`)."""
