"""Models outside training: loading a causal LM and generating from it (``generate``), the shipped
SmolLM2-135M-Instruct (``smollm``), and ``bfpo chat``."""
