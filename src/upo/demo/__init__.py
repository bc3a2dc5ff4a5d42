"""The offline demo: built-in prompts, a simulated user that labels pairs, and the pair builder."""
