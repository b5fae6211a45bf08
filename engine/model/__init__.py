"""The model itself: its config and presets, the TinySLM network, attention, the tokenizer,
int8 weights and the CPU kernels its decode steps run on."""
