"""ALMoST core: framework-free records, tokenization, losses and model factory."""
