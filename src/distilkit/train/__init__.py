"""Training: Trainer subclasses, collators and loops for task, general and embedding distillation."""
