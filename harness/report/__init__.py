"""The report: what a run recorded (``results.jsonl``), written as ``results.csv``, ``report.html``,
``summary.md``, ``junit.xml`` and ``environment.json``. An output stage like :mod:`harness.decide` and
:mod:`harness.diff`: nothing in the pipeline (pool, runner, stages, records) imports it.

Modules by job: :mod:`.tables` (row builders), :mod:`.findings` (generic findings), :mod:`.figures`
(matplotlib plots), :mod:`.markdown` (summary.md), :mod:`.writers` (the files). Model-specific content comes
from the model adapters' report hooks; this package names no model."""

from .findings import contract_findings, findings
from .figures import pareto_front
from .markdown import decision_md, summary_md, unexpected_md
from .tables import STATUS_ORDER, cell_details, csv_columns, table_rows, target_rows
from .writers import environment, read_benchmark_json, write_csv, write_junit, write_report

__all__ = ["STATUS_ORDER", "cell_details", "contract_findings", "csv_columns", "decision_md", "environment",
           "findings", "pareto_front", "read_benchmark_json", "summary_md", "table_rows", "target_rows",
           "unexpected_md", "write_csv", "write_junit", "write_report"]
