"""The generation service on Ray Serve: a FastAPI ingress, a batched generator and a decoder.

    gaia2 serve [--world-model URI] [--tokenizer URI] [--config serve.yaml] [--workdir DIR]
    serve run jobs.serve.app:build config=cluster/serve.yaml     # the same with Serve's CLI
    serve deploy cluster/serve-config.yaml                       # on a cluster (cluster/rayservice.yaml on KubeRay)

Deployments (``jobs.serve.app.build_app``):
  - ``Ingress`` (CPU): the HTTP API below. It validates a spec (422 naming the field), admits it into a
    bounded queue (503 + Retry-After when full), then drives it: generator -> decoder -> results store.
  - ``Generator`` (GPU): world model + sampler. ``@serve.batch`` gathers requests, sized by cost (cameras x
    latent steps x tokens per latent, doubled under guidance); requests of one shape are sampled together,
    in a thread off the event loop. Models come from MLflow aliases (or directories); ``reconfigure`` (a new
    ``revision`` in the config, or the alias checked every ``refresh_s``) loads the version an alias names
    now; requests already taken finish on the models they started with.
  - ``Decoder`` (GPU): the tokenizer; decodes a request's latents and writes its videos into the store while
    the generator denoises the next batch. It decodes with the tokenizer that pairs with the world model that
    produced the latents (kept by version).

HTTP API (JSON; errors are ``{"error": "<field>: <message>", "detail": [...]}``):
  POST   /v1/generations[?wait=S]     a generation spec (``gaia2.generation.spec``) -> 202 {"id", "status",
                                      "links"}; with ``wait`` and done within S seconds: 200 and the status.
  GET    /v1/generations/{id}[?wait=S]   status: queued | running | decoding | done | failed | cancelled, with
                                      ``progress`` {window, windows, step, steps, fraction}, ``error`` when
                                      failed, ``links`` when done.
  GET    /v1/generations/{id}/video.mp4 | /cameras/{name}.mp4 | /latents.npy | /spec.json
  DELETE /v1/generations/{id}         cancels a queued or running generation; deletes a finished one's files.
  POST   /v1/uploads                  raw ``.npy`` latents (T, N, L, H, W) float -> 201 {"id", "shape"}; a spec
                                      names them as ``{"latents": "<id>"}`` (checked for dtype, shape, size).
  GET    /v1/models                   the models served: URIs, registry versions, latent statistics, geometry.
  GET    /v1/options                  what a spec may name: rigs, metadata values, action profiles, agent
                                      categories, sample keys of the configured dataset, limits.
  GET    /healthz, /readyz            liveness; readiness (models loaded).
  GET    /                            a page for people: pick a mode, rig, actions, metadata and agents, watch
                                      the progress, play the video.
A spec's sources: ``{"sample": KEY}`` (or ``"@val:0"``) of the dataset the server was configured with,
``{"generation": ID}`` (a previous generation: chained rollouts), ``{"latents": UPLOAD_ID}``. The server never
opens a path a client names.

Status codes: 401 (no or malformed bearer token, when tokens are configured), 403 (unknown token), 404
(unknown id), 413 (body over ``limits.max_body_bytes`` / upload over ``limits.max_upload_bytes``), 422 (spec
errors), 503 + ``Retry-After`` (queue full, or models not loaded yet).
"""
