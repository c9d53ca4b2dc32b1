"""Dataset readers for training: PTB-XL (classification), LUDB (wave segmentation), any WFDB folder (pretraining)."""
