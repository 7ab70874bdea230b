"""Training throughput of each learner against a bare torch loop on the same model and batch.

    .venv/bin/python -m bench.training_throughput [--collect 360] [--steps 200] [--seconds 12]
                                                  [--recording binance-btcusdt-1m]

Real experiences first: the services (build_services, a temporary runtime_dir, fresh weights)
are driven by hand, no clock and no scheduler, one real bar at a time: the replay of
``--recording`` at its real resolution (``at_real_resolution``, as ``app.py evaluate`` and
tests/test_live_training.py run it; the default binance-btcusdt-1m has BTC/USDT 1m bars, so
every bar is a 1m candle that all three models predict), for ``--collect`` bars with live
training active but no training, so the resolved predictions of the finest model timeframe
(1m there) pile up as the experiences ``train_due()`` would hand each learner (the service
keeps at most 20 batches of them).

Then per model, ``learner.learn(batch)`` is timed on consecutive batches of
``training.batch_size`` of that timeframe (16 for 1m) of them (after 3 untimed steps that
fill the replay ring), against a bare loop on a copy of the same network, with its own
optimiser of the same settings, over the same rows as tensors built once: forward, loss,
``zero_grad``, backward, the same global gradient-norm clipping (part of the update's maths,
like Adam), ``step`` and nothing else (no replay bookkeeping, no input checks, no target
standardisation, no loss check, no copy of the weights for prediction, no ``.item()``).

- cnn: ``learn`` trains on the new batch plus as many replayed rows (2 x batch); the bare loop
  runs that timeframe's head on those rows with CE + 0.5 BCE + MSE + the range L1,
  weighted, as ``cnn_loss``.
- dqn: ``learn`` adds the batch to the prioritised buffer and trains on a sampled batch
  (Double-DQN target through the online and target networks, weighted smooth L1); the bare
  loop does the same maths on one sampled batch.
- cob: like the CNN, 2 x batch rows, weighted cross-entropy.

Each model is timed twice: ``filling``, right after the first steps, while its replay buffer
fills (the buffer's pages are written for the first time: page faults, expensive in a VM), and
``learn``, once the buffer has been filled to capacity from the collected experiences (the
DQN's with distinct states: it stores each distinct one once, see ``fill_distinct``), as it
is for the rest of a long run. The ``learn`` row is the steady state the target is checked
on; both are printed.

Samples/s counts the rows that go through the forward and backward pass per second.

Until the models learned on real timeframes only, the experiences came from the default
replay's interpolated 1s stream (1s batches of 32); 1s candles are no longer predicted, so
they come from real bars now, and the batch is that timeframe's (16 for 1m): figures are
not comparable with the 1s runs (a smaller batch leaves more of each step to overhead).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from core.clock import ManualClock
from core.config import load_config
from core.market.service import at_real_resolution
from core.services import build_services
from nn.book_direction import GRAD_CLIP as cob_clip
from nn.cnn import GRAD_CLIP as cnn_clip
from nn.cnn_net import RANGE_EPS, RANGE_WEIGHT
from nn.dqn import GRAD_CLIP as dqn_clip
from nn.dqn import DQNLearner, double_dqn_targets

ROUNDS = 5  # learn and bare alternate in this many blocks


def timed_loop(step, steps: int, seconds: float) -> tuple[int, float, list[float]]:
    """Run ``step()`` up to ``steps`` times or ``seconds``; (steps run, wall s, per-step ms)."""
    times = []
    t_start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() - t_start > seconds:
            break
    return len(times), time.perf_counter() - t_start, times


def compare(learn_step, bare, args) -> tuple:
    """Time learn and bare in alternate blocks, so a change in the machine's load hits both
    alike; (learn steps, wall, times), (bare steps, wall, times)."""
    learn, base = [0, 0.0, []], [0, 0.0, []]
    per_block = max(1, args.steps // ROUNDS)
    for _ in range(ROUNDS):
        for acc, step in ((learn, learn_step), (base, bare)):
            n, w, t = timed_loop(step, per_block, args.seconds / ROUNDS)
            acc[0], acc[1], acc[2] = acc[0] + n, acc[1] + w, acc[2] + t
    return learn, base


def report(name: str, case: str, rows: int, learn: list, base: list) -> None:
    rate_l, rate_b = rows * learn[0] / learn[1], rows * base[0] / base[1]
    for label, (steps, _, times), rate in ((case, learn, rate_l), ("bare", base, rate_b)):
        ratio = f"{rate_b / rate_l:.2f}x" if label != "bare" else ""
        print(f"{name:<6}{label:<8}{rows:>10}{steps:>7}{statistics.median(times):>9.2f}"
              f"{np.percentile(times, 99):>9.2f}{rate:>11,.0f}{ratio:>12}")


def fill_buffer(learner, pool: list) -> None:
    """Fill the learner's replay buffer to capacity with the collected experiences (the
    DQN's with distinct states: ``fill_distinct``)."""
    if isinstance(learner, DQNLearner):
        fill_distinct(learner, pool)
    else:
        examples = learner._examples(pool)
        while len(learner.buffer) < learner.buffer.capacity:
            learner.buffer.add(examples)


def fill_distinct(learner, pool: list) -> None:
    """The DQN's buffer filled to capacity from ``pool``, each round with its own noise on
    every state (an array two experiences share stays shared). The buffer stores each
    distinct state once (nn/state_store.py): the same pool added again would be held once,
    and sampling would read a few hundred states that stay in the cache, not a full
    buffer's."""
    rng = np.random.default_rng(0)
    buffer = learner.buffer
    while len(buffer) < buffer.capacity:
        noisy: dict[int, np.ndarray] = {}
        for e in pool:
            for a in (e.state, e.next_state):
                if a is not None and id(a) not in noisy:
                    noisy[id(a)] = (a + rng.normal(0, 0.01, a.shape)).astype(np.float32)
        buffer.add_many([dataclasses.replace(
            e, state=noisy[id(e.state)],
            next_state=None if e.next_state is None else noisy[id(e.next_state)]) for e in pool])


def collect(cfg, bars: int) -> tuple[dict, dict, str]:
    """Experiences per model of the finest model timeframe, from ``bars`` real bars of the
    replay with training active (no learning); (services, pools, timeframe)."""
    services = build_services(cfg)
    market, service = services.market, services.training
    src = market.source
    clock = ManualClock(src.start_ms, cfg.replay.speed)
    market.clock = clock
    src.backfill()
    service.start()
    for i in range(1, bars + 1):
        clock.set(src.start_ms + i * src.base_ms)
        src.emit_until(clock.now_ms())
        service.process_closes()
        if getattr(src, "ended", False):
            break
    tf = market.model_timeframes[0]
    pools = {name: list(service.learning.waiting[name][tf]) for name in service.learners}
    return services, pools, tf


def bare_cnn(learner, exps: list, rows: int, tf: str):
    net = copy.deepcopy(learner.net).train()
    opt = type(learner.optimizer)(net.parameters(), **learner.optimizer.defaults)
    ex = learner._examples(exps[:rows])
    x, label, conf, ohlcv, weight = (torch.as_tensor(ex[k]) for k in
                                     ("state", "label", "confidence", "ohlcv", "weight"))
    log_range = torch.log((ohlcv[:, 1] - ohlcv[:, 2]).clamp(min=0) + RANGE_EPS)

    def step():
        out = net(x, tf)
        w = weight / weight.sum()
        ce = F.cross_entropy(out.logits, label, reduction="none")
        bce = F.binary_cross_entropy(out.confidence, conf, reduction="none")
        mse = ((out.ohlcv - ohlcv) ** 2).mean(dim=-1)
        l1 = (out.log_range - log_range).abs()
        loss = (w * (ce + 0.5 * bce + mse + RANGE_WEIGHT * l1)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cnn_clip)
        opt.step()

    return step


def bare_dqn(learner, batch_size: int):
    net = copy.deepcopy(learner.q_network).train()
    target = copy.deepcopy(learner.target_network)
    opt = type(learner.optimizer)(net.parameters(), **learner.optimizer.defaults)
    b = learner.buffer.sample(batch_size, step=learner.train_steps)
    s, ns, a, r, d, w = (torch.as_tensor(v) for v in
                         (b.states, b.next_states, b.actions, b.rewards, b.dones, b.weights))
    gamma = learner.cfg.gamma

    def step():
        with torch.no_grad():
            y = double_dqn_targets(r, d, net(ns), target(ns), gamma)
        q = net(s).gather(1, a.unsqueeze(1)).squeeze(1)
        loss = (w * F.smooth_l1_loss(q, y, reduction="none")).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), dqn_clip)
        opt.step()

    return step


def bare_cob(learner, exps: list, rows: int):
    net = copy.deepcopy(learner.net).train()
    opt = type(learner.optimizer)(net.parameters(), **learner.optimizer.defaults)
    ex = learner._examples(exps[:rows])
    x, label, weight = (torch.as_tensor(ex[k]) for k in ("state", "label", "weight"))

    def step():
        logits = net(x)
        w = weight / weight.sum()
        loss = (w * F.cross_entropy(logits, label, reduction="none")).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cob_clip)
        opt.step()

    return step


def src_desc(cfg) -> str:
    return (f"{', '.join(cfg.market.symbols)}, {cfg.market.timeframes[0]} bars, models on "
            f"{'/'.join(cfg.market.model_timeframes)}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--collect", type=int, default=360, help="real bars replayed for data")
    p.add_argument("--steps", type=int, default=200, help="training steps timed per case")
    p.add_argument("--seconds", type=float, default=12.0, help="wall limit per case")
    p.add_argument("--batch", type=int,
                   help="experiences per learn() (default: the timeframe's training batch)")
    p.add_argument("--recording", default="binance-btcusdt-1m",
                   help="replay recording, stepped one real bar at a time")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="tickwise-bench-") as tmp:
        cfg = load_config("config.yaml", {"runtime_dir": tmp, "market.source": "replay",
                                          "replay.recording": args.recording,
                                          "models.load_checkpoints": False}, environ={})
        cfg = at_real_resolution(cfg)
        torch.set_num_threads(cfg.torch.threads)
        t0 = time.perf_counter()
        services, pools, tf = collect(cfg, args.collect)
        batch = args.batch or cfg.training.batch_size[tf]
        gc.freeze()  # as app.py does after start-up
        print(f"training throughput, torch threads {torch.get_num_threads()}, batch {batch} "
              f"experiences ({tf}), collected from {args.collect} {cfg.replay.recording} "
              f"bars ({src_desc(cfg)}) in {time.perf_counter() - t0:.1f} s: "
              + ", ".join(f"{m} {len(v)}" for m, v in pools.items()))
        print(f"{'model':<6}{'case':<8}{'rows/step':>10}{'steps':>7}{'p50 ms':>9}"
              f"{'p99 ms':>9}{'samples/s':>11}{'learn/bare':>12}")
        for name, learner in services.training.learners.items():
            pool = pools[name]
            if len(pool) < 2 * batch:
                print(f"{name:<6}only {len(pool)} experiences collected; need {2 * batch}")
                continue
            n_batches = len(pool) // batch
            cursor = iter(range(10**9))

            def learn_step(learner=learner, pool=pool, n_batches=n_batches, cursor=cursor):
                k = next(cursor) % n_batches
                learner.learn(pool[k * batch:(k + 1) * batch])

            for _ in range(3):  # fill the replay ring / buffer so every step is full size
                learn_step()
            if name == "dqn":
                rows = max(batch, 8)
                bare = bare_dqn(learner, rows)
            else:
                rows = batch + min(batch, len(learner.buffer))
                bare = (bare_cnn(learner, pool, rows, tf) if name == "cnn"
                        else bare_cob(learner, pool, rows))
            for _ in range(3):
                bare()
            # First while the replay buffer fills (its pages are written for the first time),
            # then with it full, as it is for the rest of a long run.
            for case in ("filling", "learn"):
                if case == "learn":
                    fill_buffer(learner, pool)
                report(name, case, rows, *compare(learn_step, bare, args))
        print("learn/bare: how many times slower learn() is than the bare loop (time per row)")
        services.stop()


if __name__ == "__main__":
    main()
