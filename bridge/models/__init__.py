"""Production models: the catalog, pulling from a Hugging Face hub or a directory,
the manifest of what is placed under ``models/``, presets, and ``bridge models check``.

Nothing here reaches a network unless the operator runs ``bridge models pull`` (which
talks to ``HF_ENDPOINT``, https://huggingface.co by default); serving never does.
"""
