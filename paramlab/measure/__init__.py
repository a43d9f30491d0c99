"""Instruments: small functions and hooks that measure what moves inside a network. No wandb here."""
