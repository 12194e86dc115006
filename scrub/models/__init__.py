"""Models shipped with scrub, one Hugging Face-format directory each (see each MODEL_CARD.md)."""
