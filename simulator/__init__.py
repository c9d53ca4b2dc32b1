"""Replay ECG records over MQTT as virtual devices, with their reference annotations (see docs/simulator.md)."""
