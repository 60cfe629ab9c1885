"""The benchmark: every system on the same speaker-independent folds, speed and scale, and the document.

Run from the project root:

    python -m benchmark.run        # accuracy cells (then speed); rewrites docs/benchmarks.md as cells finish
    python -m benchmark.speed      # real-time factor, latency, long clips, training time (benchmark/results/speed.json)
    python -m benchmark.report     # rewrite docs/benchmarks.md from the committed record (benchmark/results) alone
    python -m benchmark.record     # export finished run folders of runs/bench into the record (one JSON per cell)
    python -m benchmark.users --cell runs/bench/SYSTEM/loco   # simulated app users (then benchmark.record)
    python -m benchmark.latency    # the app's server time per request and per live-microphone update
    python -m benchmark.baselines --corpus emodb --protocol loso   # a baseline alone

common.py holds what run, speed and report share (protocols, systems, folds, paths); record.py the committed
record the document is written from; run and speed never import each other, and only report.py writes the
document. scripts/bench_record.sh fills the record on CPU, cheapest cells first, resumably.
"""
