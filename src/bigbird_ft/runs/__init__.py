"""The runs the entry points start: train() (train.py) and pretrain() (pretrain.py), each check -> build -> fit -> write."""
