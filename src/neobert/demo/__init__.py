"""The demo, apart from the library: the offline demo corpus (pinned archives, their extraction, the fixed
pre-training / evaluation split and its contamination guard), the contrastive pairs drawn from it, the
offline evaluation suites scored on its reserved half, and the ablation ladder trained on it. It builds on
the library (data, train, finetune, embed); no library module imports it, only the commands do."""
