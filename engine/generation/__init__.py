"""From a model to text: sampling settings, the one sampler, the one generation loop,
opening a model for generation (device, dtype, threads, compile) and scoring text (bits per byte)."""
