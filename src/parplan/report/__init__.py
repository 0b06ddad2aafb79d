"""Pictures and exports of plans: Gantt charts, memory plots, Chrome traces, pipelining CSV.

Importing this package does not import matplotlib or torch: the plotting functions import
matplotlib (Agg backend) when called, and the CSV export never needs torch.
"""

from __future__ import annotations

from parplan.report.export import (
    TARGETS,
    export_plan,
    from_pipelining_csv,
    to_pipelining_csv,
    write_pipelining_csv,
)
from parplan.report.gantt import write_gantt
from parplan.report.memory_plot import write_memory_plot
from parplan.report.pareto_plot import write_pareto_plot
from parplan.report.trace import plan_to_chrome_trace, write_chrome_trace

__all__ = [
    "TARGETS",
    "export_plan",
    "from_pipelining_csv",
    "plan_to_chrome_trace",
    "to_pipelining_csv",
    "write_chrome_trace",
    "write_gantt",
    "write_memory_plot",
    "write_pareto_plot",
    "write_pipelining_csv",
]
