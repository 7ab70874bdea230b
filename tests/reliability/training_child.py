"""A training process for tests/reliability/test_training_crash.py to kill with SIGKILL.

``python -m tests.reliability.training_child RUNTIME INTERVAL_S [--hang-in-save]`` builds
the app's services on the bundled replay (as tests/test_live_training.py does), resumes from
the checkpoints in RUNTIME, turns training on and runs the jobs as fast as it can, forever.
After every run of the jobs it prints one JSON line: the wall time, each model's train steps
and the step of its newest checkpoint. The prediction store is never flushed here (its own
crash safety is tested apart): after the kill, the restarted replay's candles are new to it. With ``--hang-in-save`` the first checkpoint write
once every model has one stops after its temporary file is complete and before the rename,
prints ``{"hanging": <the temporary file>}`` and waits to be killed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch


def hang_in_save(checkpoints: Path, models) -> None:
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(src).name.startswith(".tmp-") and all(
                any((checkpoints / m).glob("step-*.pt")) for m in models):
            print(json.dumps({"hanging": str(src)}), flush=True)
            time.sleep(600)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace


def main(argv: list[str]) -> None:
    from tests.test_live_training import make_services, run

    torch.set_num_threads(1)
    runtime, interval = Path(argv[0]), float(argv[1])
    services = make_services(runtime, **{"training.checkpoint_every": 100_000,
                                         "training.checkpoint_interval_s": interval})
    training = services.training
    if "--hang-in-save" in argv:
        hang_in_save(runtime / "checkpoints", tuple(training.learners))
    training.load_checkpoints()
    training.start()
    while True:
        run(services, 1)
        saved = {name: (info or {}).get("step")
                 for name in training.learners
                 if (info := training.checkpoints.latest_info(name)) is not None}
        print(json.dumps({"t": time.time(), "saved": saved,
                          "steps": {n: lrn.train_steps for n, lrn in training.learners.items()}}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
