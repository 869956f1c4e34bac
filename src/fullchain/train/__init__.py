"""Training recipes: pretraining now; SFT, LoRA and DPO come with their issues."""
