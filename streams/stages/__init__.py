"""The worker's stages: identity, lead, trainer (glue between the engine and processors/)."""
