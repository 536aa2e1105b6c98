"""Passkey finetuning examples (pending the shared builder)."""
