"""Dataset readers for training: PTB-XL, CinC 2021 and LUDB diagnoses (classification; ``superclass`` holds the label
rule), LUDB wave marks (segmentation), any WFDB folder (pretraining)."""
