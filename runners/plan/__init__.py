"""Planning: what a run will need before it spends GPU hours.

Model resolution (``models``) apart from architecture arithmetic (``architecture``); memory per GPU
(``memory``, ``activations``, the learned ``structure`` with its meta-device ``trace`` and ``cudalike``
allocator); the cheapest fix (``strategy``); time (``timing``, and the collectives of several GPUs and nodes in
``comms``); cadence (``cadence``); the sentence-transformers loss choice (``st_losses``); the probe (``probe``,
``probe_worker``) and the plan that puts them together (``planner``). Imports only the root contracts.
"""
