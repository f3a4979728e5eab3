"""Ray Data stages of the world model: latent shards -> model-ready samples."""
