"""The documents generated from committed results rebuild byte-identically from them (docs/benchmarks.md: test_bench.py):
a figure on a page always has its results file, and nobody edits a generated page by hand."""
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_serving_page_rebuilds_from_its_results(tmp_path):
    from benchmark import serving_report

    serving_report.write_doc(tmp_path / "serving.md")
    assert (tmp_path / "serving.md").read_text() == (ROOT / "docs" / "serving.md").read_text()


def test_adaptation_page_rebuilds_from_its_results(tmp_path):
    from benchmark.adaptation import RESULTS
    from benchmark.adaptation_report import write_report
    from benchmark.common import read_json

    write_report(read_json(RESULTS), tmp_path / "adaptation.md")
    assert (tmp_path / "adaptation.md").read_text() == (ROOT / "docs" / "adaptation.md").read_text()
    assert (tmp_path / "adaptation_reliability.png").stat().st_size > 0


def test_finetune_table_and_verdict_rebuild_from_the_fold_files(tmp_path):
    from benchmark import finetune_cached

    committed = finetune_cached.RESULTS / "README.md"
    copy = shutil.copy(committed, tmp_path / "README.md")
    finetune_cached.write_report(Path(copy))
    rebuilt = Path(copy).read_text()
    assert rebuilt == committed.read_text()
    assert "| mean | 5 of 5 folds |" in rebuilt and "**Verdict: " in rebuilt  # all five folds: a verdict
