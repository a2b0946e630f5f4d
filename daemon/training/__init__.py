"""LoRA fine-tuning: data (tokenise + mask), the recipe, the status writer and the collectors."""
