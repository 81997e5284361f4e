"""ALMoST in miniature on real pretrained LMs (Gemma 3 270M and SmolLM2-135M-Instruct from GGUF packages):
``almost.real.pipeline`` runs the stages of ``configs/gemma/``, ``almost.real.report`` writes
``runs/gemma/report.{json,md}``; ``almost.real.split`` holds queries out of the reward model's training."""
