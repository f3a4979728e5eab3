"""The service's own metrics, exported beside Ray Serve's on Ray's Prometheus endpoint (each node's
``metrics_export_port``; names get Ray's ``ray_`` prefix): ``ray_gaia2_queue_length``,
``ray_gaia2_batch_size``, ``ray_gaia2_batch_cost``, ``ray_gaia2_denoising_steps_per_second``,
``ray_gaia2_seconds_per_generated_second``, ``ray_gaia2_generations_total{status=...}``,
``ray_gaia2_rejected_total{code=...}``, ``ray_gaia2_model_switches_total``.

Each is made once per process (Ray's metric objects register themselves by name).
"""

from __future__ import annotations

from functools import cache

from ray.serve import metrics


@cache
def queue_length() -> metrics.Gauge:
    return metrics.Gauge("gaia2_queue_length", description="generations accepted and not finished (queued or "
                                                           "running), per ingress replica")


@cache
def batch_size() -> metrics.Histogram:
    return metrics.Histogram("gaia2_batch_size", description="requests per generator batch",
                             boundaries=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64])


@cache
def batch_cost() -> metrics.Histogram:
    return metrics.Histogram("gaia2_batch_cost", description="cost per generator batch (cameras x latent steps x "
                                                             "tokens, doubled under guidance)",
                             boundaries=[2 ** k for k in range(8, 24)])


@cache
def denoising_steps_per_s() -> metrics.Gauge:
    return metrics.Gauge("gaia2_denoising_steps_per_second", description="sampler steps per second, summed over "
                                                                         "the requests of the last batch")


@cache
def seconds_per_generated_second() -> metrics.Histogram:
    return metrics.Histogram("gaia2_seconds_per_generated_second",
                             description="sampling wall time per second of video generated",
                             boundaries=[0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500])


@cache
def generations() -> metrics.Counter:
    return metrics.Counter("gaia2_generations_total", description="generations finished, by final status",
                           tag_keys=("status",))


@cache
def rejected() -> metrics.Counter:
    return metrics.Counter("gaia2_rejected_total", description="requests refused, by HTTP status",
                           tag_keys=("code",))


@cache
def model_switches() -> metrics.Counter:
    return metrics.Counter("gaia2_model_switches_total", description="model versions loaded by generator replicas")
