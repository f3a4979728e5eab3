"""Flow matching for the latent world model (paper §2.2.2, §2.2.4, §4, §5): the tau distribution, the
interpolation and velocity target, the masked L2 loss, training tasks (scratch / context / inpainting), latent
normalisation, and Euler sampling over the linear-quadratic schedule. Convention: tau = 1 is data, 0 is noise.
"""

from gaia2.flow.normalize import denormalize, normalize
from gaia2.flow.objective import flow_loss, grouped_sums, interpolate, tau_buckets, velocity_target
from gaia2.flow.sampling import VelocityFn, euler_sample, linear_quadratic_schedule, truncate_schedule
from gaia2.flow.tasks import (CONTEXT, INPAINT, SCRATCH, TASK_NAMES, FlowInputs, TaskBatch, TaskSampler, build_inputs,
                              step_tau)
from gaia2.flow.tau import TauSampler

__all__ = ["CONTEXT", "FlowInputs", "INPAINT", "SCRATCH", "TASK_NAMES", "TaskBatch",
           "TaskSampler", "TauSampler", "VelocityFn", "build_inputs", "denormalize", "euler_sample", "flow_loss",
           "grouped_sums", "interpolate", "linear_quadratic_schedule", "normalize", "step_tau", "tau_buckets",
           "truncate_schedule", "velocity_target"]
