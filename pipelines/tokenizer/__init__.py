"""Ray Data pipelines around the video tokenizer: its training clips and the latent-encoding job."""
