"""Run plans for real on torch.distributed; profile per-op costs; trace user modules (imports torch).

``import parplan`` never imports this package: import it explicitly. Entry points:
:func:`run_plan` / :func:`run_plans` (execute plans, compare with the prediction and with a
single-process run), :func:`profile_model` (the ``parplan profile`` measurements),
:func:`build_torch_model` (torch twins of the zoo models) and :func:`trace_module` (a user's module
as an OpGraph).
"""

from parplan.runtime.executor import ActionTiming, DeviceExecutor, ModelSpec, model_spec_of, reference_step
from parplan.runtime.launch import (
    RunError,
    RunResult,
    measured_trace,
    profile_in_workers,
    replay_step_s,
    run_plan,
    run_plans,
    write_measured_trace,
)
from parplan.runtime.modules import TORCH_MODELS, OpGraphModel, OpModule, build_torch_model
from parplan.runtime.profile import profile_model, profile_ops
from parplan.runtime.trace_graph import trace_module

__all__ = [
    "TORCH_MODELS",
    "ActionTiming",
    "DeviceExecutor",
    "ModelSpec",
    "OpGraphModel",
    "OpModule",
    "RunError",
    "RunResult",
    "build_torch_model",
    "measured_trace",
    "model_spec_of",
    "profile_in_workers",
    "profile_model",
    "profile_ops",
    "reference_step",
    "replay_step_s",
    "run_plan",
    "run_plans",
    "trace_module",
    "write_measured_trace",
]
