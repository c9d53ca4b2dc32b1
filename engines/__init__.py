"""The shipped engines: one folder per engine (manifest.json + model.onnx), package data found by the edge."""
