"""The benchmark: every system on the same speaker-independent folds, speed and scale, and the document.

Run from the project root:

    python -m benchmark.run        # accuracy cells (then speed); rewrites docs/benchmarks.md as cells finish
    python -m benchmark.speed      # real-time factor, latency, long clips, training time (runs/bench/speed.json)
    python -m benchmark.report     # rewrite docs/benchmarks.md from runs/bench alone
    python -m benchmark.users --cell runs/bench/SYSTEM/loco   # simulated app users calibrating to their voice
    python -m benchmark.latency    # the app's server time per request and per live-microphone update
    python -m benchmark.baselines --corpus emodb --protocol loso   # a baseline alone

common.py holds what run, speed and report share (protocols, systems, folds, paths); run and speed never
import each other, and only report.py writes the document.
"""
