"""Training stages built on `transformers.Trainer`: fine-tuning and task distillation."""
