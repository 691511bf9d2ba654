"""`OUT/report.html`: a self-contained page that shows what a run did (`dataengine report OUT`)."""
from dataengine.report.build import build_report, load_report_data, render_report

__all__ = ["build_report", "load_report_data", "render_report"]
