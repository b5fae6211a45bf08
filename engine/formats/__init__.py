"""Other programs' models in and out: llama2.c, the author's HeliumLM, transformers (HF)
and GGUF (llama.cpp, Ollama)."""
