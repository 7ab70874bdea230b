"""The live loop: candles close -> predictions resolve -> models learn -> the page shows it.

- ``service``: ``LiveTraining``, the composition and the jobs;
- ``jobs``: the one job table the scheduler and the evaluate command both read;
- ``cycle``: observe, encode, decide, resolve, record (one market second's closes);
- ``learning``: experiences wait for a full batch; training steps; checkpoints;
- ``signals``: votes fused into a signal per symbol, acted on paper;
- ``read_model`` and ``quality``: what the page and the REST API show;
- ``models``: the enabled models built from config (nn/registry.py).
"""
