"""Inference engines (HF, vLLM), budget forcing and the test-time methods."""
