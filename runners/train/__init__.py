"""Training: what runs in every rank (``python -m runners.train --run-dir DIR``).

The entry point (``entry``), helpers shared by the runners (``common``), one module per runner (``hf``,
``sentence``, ``simpletransformers``) and the Trainer callback that writes the event stream
(``callback``). Runners never import each other: what two of them need lives in ``common``.
Imports the root contracts and the plan (model resolution, cadence, the loss choice).
"""
