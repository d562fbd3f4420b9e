"""A GPT-2 written out by hand in PyTorch, able to load OpenAI's released weights.

Nothing in this package knows about spam: it is the model of chapters 2-5 of the book,
reusable by any chapter that builds on it.
"""
