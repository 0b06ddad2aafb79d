"""Run plans for real on torch.distributed; profile per-op costs; trace user modules (imports torch).

``import parplan`` never imports this package: import it explicitly.
"""

from parplan.runtime.executor import ActionTiming, DeviceExecutor, ModelSpec, model_spec_of, reference_step
from parplan.runtime.launch import RunError, RunResult, run_plan
from parplan.runtime.modules import TORCH_MODELS, OpGraphModel, OpModule, build_torch_model

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
    "model_spec_of",
    "reference_step",
    "run_plan",
]
