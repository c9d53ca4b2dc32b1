"""Streaming DSP building blocks of the edge: numpy in, numpy out, state in plain fields."""
