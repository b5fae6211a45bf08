"""The Hugging Face Hub: its client (push, download), the catalog of public models and
`helium models pull`."""
