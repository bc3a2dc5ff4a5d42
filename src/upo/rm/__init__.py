"""`upo rm train`: Bradley-Terry reward models on paired preference data.

loss.py holds the pure loss and pair metrics, config.py the typed RMConfig, train.py the data
preparation, the training loop and the save_pretrained output that `rm:PATH` loads.
"""
