"""The training layer: losses, layer-wise lr decay, schedules, samplers, checkpoints and resume, FSDP2, presets."""
