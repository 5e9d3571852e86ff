"""Training DeepCL on labelled pairs: finding and loading pairs, augmentation, the training loop."""
from .options import TrainOptions, TrainResult
from .pairs import LoadedPair, PairFiles, find_pairs, load_pair, load_pairs, read_label, split_pairs
from .trainer import train

__all__ = ["TrainOptions", "TrainResult", "train", "PairFiles", "LoadedPair", "find_pairs", "load_pair",
           "load_pairs", "read_label", "split_pairs"]
