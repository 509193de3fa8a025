"""Learning: the RL environments (PettingZoo, Gymnasium), PPO training with parameter sharing on Ray,
and export of trained policies for torch-free NumPy inference. Not needed at run time."""
