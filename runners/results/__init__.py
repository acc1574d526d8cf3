"""Results: what happens to a run after (or while) it trains.

Which saved model of a run to take (``checkpoints``: the best one the run marked, its final model, its
last complete ``checkpoint-N``, or a step) and what it is (a LoRA adapter or a full model); exporting it
(``export``: the adapter folder, or a full model, written beside the target and renamed into place)
and merging an adapter into its base (``merge``: the base rebuilt from the spec, ``merge_and_unload``).
Runs side by side (``compare``; what each was set up with: ``run_settings``). A checkpoint evaluated on a
held-out file (``evaluate``; its worker ``evaluate_worker``). Later: try.
Imports the root contracts, ``plan`` (model resolution, the tokenizer), ``watch`` (the run history) and
``train`` (``ftui eval`` reruns the runner's own evaluation code), never ``launch``; torch, transformers and
peft are imported inside the functions that merge and evaluate, so importing this package stays cheap.
"""
