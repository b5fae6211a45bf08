"""`helium serve`: Helium models over HTTP, OpenAI- and Ollama-compatible, many clients decoded as one batch.

`scheduler` owns the model (one decode thread, rows joining and leaving between tokens), `fields` checks what
clients send, `openai_api` and `ollama_api` speak the two protocols, `app` puts them behind one server.
"""
